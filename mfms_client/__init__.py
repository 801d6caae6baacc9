"""The REST contract shared by the server and the workers: the request and response models
(:mod:`mfms_client.schemas`) and the typed httpx client (:mod:`mfms_client.client`).

``server`` and ``workers`` depend on each other only through this package: neither imports
the other. It needs httpx, pydantic and the library, never FastAPI or SQLAlchemy.
"""

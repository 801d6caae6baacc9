"""The mfms-bo service: studies, trials and measurements behind a REST API.

Importing this package is cheap and web-free; :mod:`server.client` needs httpx, pydantic
and the library, so a worker or an orchestrator can use the client without FastAPI or
SQLAlchemy loaded.
"""

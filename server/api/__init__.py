"""HTTP layer: thin routes over :mod:`server.storage` and the scheduling services."""

"""Alembic migrations of the service's database (run with ``mfms db upgrade``)."""

"""Throwaway PostgreSQL databases for tests that need a real server.

PostgreSQL is expected at ``MFMS_TEST_POSTGRES_URL`` (default: the local trust-auth server
on 127.0.0.1:5432). If it is unreachable the test FAILS with a message: CI has it, and
silently skipping would hide exactly the bugs these tests exist for. ``MFMS_TEST_SKIP_POSTGRES=1``
skips instead, for a machine without it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text

PG_ADMIN_URL = os.environ.get("MFMS_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
SKIP_PG = os.environ.get("MFMS_TEST_SKIP_POSTGRES") == "1"


@contextmanager
def empty_postgres_database(prefix: str = "mfms_test") -> Iterator[str]:
    """Create an empty database (no schema), yield its SQLAlchemy URL, drop it afterwards.

    The name carries the process id and a random suffix, so parallel test processes and a
    crashed earlier run never collide; ``WITH (FORCE)`` drops it even while a server the
    test started still holds connections.
    """
    if SKIP_PG:
        pytest.skip("MFMS_TEST_SKIP_POSTGRES=1")
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # any failure means no PostgreSQL
        admin.dispose()
        pytest.fail(f"PostgreSQL unreachable at {PG_ADMIN_URL} ({exc!r}); start it or set "
                    "MFMS_TEST_SKIP_POSTGRES=1", pytrace=False)
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

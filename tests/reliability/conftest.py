"""Reliability tests: load, faults and bad input, sized for a 2-core machine.

Each PostgreSQL test gets a database of its own (made and dropped by
``bench.soak.fresh_database``, the soak script's machinery), on the cluster named by
``MFMS_TEST_POSTGRES_URL`` like the server tests; ``MFMS_TEST_SKIP_POSTGRES=1`` skips them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.soak import fresh_database
from tests.server.conftest import PG_ADMIN_URL, SKIP_PG


@pytest.fixture
def pg_database() -> Iterator[str]:
    """The URL of a fresh, migrated PostgreSQL database, dropped after the test."""
    if SKIP_PG:
        pytest.skip("MFMS_TEST_SKIP_POSTGRES=1")
    try:
        db = fresh_database(PG_ADMIN_URL, prefix="mfms_rel")
        url = db.__enter__()
    except Exception as exc:  # any failure means no PostgreSQL
        pytest.fail(f"PostgreSQL unreachable at {PG_ADMIN_URL} ({exc!r}); start it or set "
                    "MFMS_TEST_SKIP_POSTGRES=1", pytrace=False)
    try:
        yield url
    finally:
        db.__exit__(None, None, None)

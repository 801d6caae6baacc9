"""Reliability tests: load, faults and bad input, sized for a 2-core machine.

Each PostgreSQL test gets a database of its own (``tests.postgres``), on the cluster named
by ``MFMS_TEST_POSTGRES_URL`` like the server tests; ``MFMS_TEST_SKIP_POSTGRES=1`` skips them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from server import migrate
from tests.postgres import empty_postgres_database


@pytest.fixture
def pg_database() -> Iterator[str]:
    """The URL of a fresh, migrated PostgreSQL database, dropped after the test."""
    with empty_postgres_database("mfms_rel") as url:
        migrate.upgrade(url)
        yield url

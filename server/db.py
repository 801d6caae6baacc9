"""Engine and transactions: the database is the source of truth.

* SQLite: every transaction starts with ``BEGIN IMMEDIATE`` (writers are serialised by the
  database itself, so a read-then-write such as claiming a trial cannot interleave with
  another), WAL journal and a busy timeout so concurrent requests wait instead of failing.
* PostgreSQL (psycopg 3): a pooled engine with ``pool_pre_ping`` so a restarted database is
  picked up again without a server restart, and a connect timeout so an unreachable one is
  a 503 within seconds.

Connection failures surface as :class:`~server.errors.Unavailable` (HTTP 503) from
:meth:`Database.session`, so callers never see driver exceptions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from server.config import normalize_database_url
from server.errors import Unavailable

__all__ = ["Database", "utcnow", "CONNECT_TIMEOUT_SECONDS"]

CONNECT_TIMEOUT_SECONDS = 5  # PostgreSQL; a ?connect_timeout= in the URL takes precedence


def utcnow() -> datetime:
    """Naive UTC: stored identically by SQLite and PostgreSQL, compared without surprises."""
    return datetime.now(UTC).replace(tzinfo=None)


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # DBAPI types
        dbapi_conn.isolation_level = None  # let the "begin" hook below issue BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        if ":memory:" not in url and url not in ("sqlite://", "sqlite:///"):
            cur.execute("PRAGMA journal_mode=WAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Database:
    """An engine plus a session factory; one per process (and per test)."""

    def __init__(self, url: str, pool_size: int = 20) -> None:
        self.url = normalize_database_url(url)
        if self.url.startswith("sqlite"):
            self.engine = _sqlite_engine(self.url)
        else:
            # Without a connect timeout a database host that does not answer (a network
            # partition) holds every request for minutes instead of a prompt 503.
            timeout = {} if "connect_timeout" in make_url(self.url).query \
                else {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
            self.engine = create_engine(self.url, pool_pre_ping=True, pool_size=pool_size,
                                        max_overflow=pool_size, pool_timeout=30,
                                        connect_args=timeout)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: commits on success, rolls back on any error.

        A lost or refused connection becomes :class:`Unavailable` with a message saying so;
        other errors propagate unchanged after the rollback.
        """
        try:
            with self._factory() as s, s.begin():
                yield s
        except (OperationalError, PoolTimeout) as exc:
            raise Unavailable(f"database unavailable: {_first_line(exc)}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise Unavailable(f"database connection lost: {_first_line(exc)}") from exc
            raise

    def dispose(self) -> None:
        self.engine.dispose()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

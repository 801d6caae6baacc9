"""Engine and transactions: the database is the source of truth.

* SQLite: every transaction starts with ``BEGIN IMMEDIATE`` (writers are serialised by the
  database itself, so a read-then-write such as claiming a trial cannot interleave with
  another), WAL journal and a busy timeout so concurrent requests wait instead of failing.
* PostgreSQL (psycopg 3): a pooled engine with ``pool_pre_ping`` so a restarted database is
  picked up again without a server restart. One setting, ``database_timeout_seconds``
  (``T``), bounds every wait on the database: connecting (``connect_timeout``), a pool
  checkout, each statement on the server (``statement_timeout``), and each round trip on
  the client (:class:`_TimedConnection`), so a database that is unreachable, or connected
  but silent, is a 503 within about ``T`` instead of a hang. TCP keepalives and
  ``tcp_user_timeout`` find connections lost to a network partition while they sit idle.

Connection failures surface as :class:`~server.errors.Unavailable` (HTTP 503) from
:meth:`Database.session`, so callers never see driver exceptions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, ExceptionContext, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from server.config import normalize_database_url
from server.errors import Unavailable

__all__ = ["Database", "utcnow", "CONNECT_TIMEOUT_SECONDS", "DEFAULT_TIMEOUT_SECONDS"]

DEFAULT_TIMEOUT_SECONDS = 5.0  # Settings.database_timeout_seconds
# PostgreSQL's connect timeout at the default; a ?connect_timeout= in the URL takes precedence
CONNECT_TIMEOUT_SECONDS = math.ceil(DEFAULT_TIMEOUT_SECONDS)
# The client waits this much longer than the server's statement_timeout, so a database that
# is slow but alive reports its own timeout (and keeps the connection) before the client
# gives up on a silent one and drops it.
_CLIENT_GRACE_SECONDS = 0.5


def utcnow() -> datetime:
    """Naive UTC: stored identically by SQLite and PostgreSQL, compared without surprises."""
    return datetime.now(UTC).replace(tzinfo=None)


# SQLite's busy timeout: a writer waiting on the file lock is queueing behind other writers
# of the same file, not a stalled database, so it waits as long as a PostgreSQL row lock
# would (many workers on the embedded default must not turn into 503s under load).
SQLITE_BUSY_SECONDS = 60.0


def _sqlite_engine(url: str, timeout: float) -> Engine:
    busy = max(timeout, SQLITE_BUSY_SECONDS)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # DBAPI types
        dbapi_conn.isolation_level = None  # let the "begin" hook below issue BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")  # (the busy timeout is the connect timeout)
        if ":memory:" not in url and url not in ("sqlite://", "sqlite:///"):
            cur.execute("PRAGMA journal_mode=WAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Database:
    """An engine plus a session factory; one per process (and per test)."""

    def __init__(self, url: str, pool_size: int = 20,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.url = normalize_database_url(url)
        self.timeout = timeout
        if self.url.startswith("sqlite"):
            # A writer waits this long for another process's write lock ("database is
            # locked" is then a 503 like any other unavailable database).
            self.engine = _sqlite_engine(self.url, timeout)
        else:
            # Every connection the process may open (2 x pool_size: at the default, the 40
            # request threads' worth) stays open in the pool: with half of them as
            # overflow, each burst past pool_size closed its extra connections again and the
            # next one connected anew (a new PostgreSQL backend per request under load).
            self.engine = create_engine(self.url, pool_pre_ping=True,
                                        pool_size=2 * pool_size, max_overflow=0,
                                        pool_timeout=timeout,
                                        connect_args=_pg_connect_args(self.url, timeout))
            answer_within = timeout + _CLIENT_GRACE_SECONDS

            @event.listens_for(self.engine, "do_connect")
            def _timed(_dialect, _rec, cargs, cparams) -> _TimedConnection:  # DBAPI types
                conn = _TimedConnection.connect(*cargs, **cparams)
                conn.answer_within = answer_within
                return conn

            @event.listens_for(self.engine, "handle_error")
            def _silent_is_not_restarted(ctx: ExceptionContext) -> None:
                # A pre-ping that failed on a dropped connection (a restarted database)
                # reconnects and carries on; one the database left unanswered fails the
                # checkout at once, instead of waiting the connect timeout on top for a
                # new connection to a database that is not answering.
                if ctx.is_pre_ping and isinstance(ctx.original_exception, _NoAnswer):
                    ctx.is_disconnect = False
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
        with _unavailable_on_lost_connection(), self._factory() as s, s.begin():
            yield s

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """One transaction on a Core connection, for the hot paths of the worker protocol
        (a claim, a measurement): no ORM unit of work, identity map or attribute
        instrumentation, and statements whose SQL text never varies, so psycopg prepares
        them server-side after their fifth use on a connection. Commits, rolls back and
        maps failures exactly as :meth:`session` does.
        """
        with _unavailable_on_lost_connection(), self.engine.begin() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()


@contextmanager
def _unavailable_on_lost_connection() -> Iterator[None]:
    """A refused, timed-out or lost connection as :class:`Unavailable` (a 503 naming the
    cause, which a client may retry); any other database error propagates unchanged."""
    try:
        yield
    except (OperationalError, PoolTimeout) as exc:
        raise Unavailable(f"database unavailable: {_first_line(exc)}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise Unavailable(f"database connection lost: {_first_line(exc)}") from exc
        raise


def _pg_connect_args(url: str, timeout: float) -> dict[str, Any]:
    """libpq parameters derived from the one timeout; any the URL sets itself win (SQLAlchemy
    would let ``connect_args`` override the URL's query otherwise)."""
    seconds = max(1, math.ceil(timeout))
    args: dict[str, Any] = {
        "connect_timeout": max(2, seconds),  # libpq and psycopg take anything under 2 as 2
        "keepalives": 1, "keepalives_idle": seconds,
        "keepalives_interval": max(1, math.ceil(timeout / 3)), "keepalives_count": 3,
        "tcp_user_timeout": int(2 * timeout * 1000),  # ms unacknowledged before a drop
    }
    query = make_url(url).query
    args = {k: v for k, v in args.items() if k not in query}
    options = str(query.get("options", ""))
    if "statement_timeout" not in options:
        args["options"] = f"{options} -c statement_timeout={int(timeout * 1000)}".strip()
    return args


class _NoAnswer(psycopg.OperationalError):
    """A round trip outlived ``answer_within``; the connection is closed."""


class _TimedConnection(psycopg.Connection):
    """A psycopg connection whose every round trip (statement, commit, rollback, the pool's
    ping) ends within ``answer_within`` seconds.

    ``statement_timeout`` only helps while the server can answer, and TCP keepalives while
    the peer's kernel stops acknowledging; a database process that accepts bytes and never
    replies (hung, or behind a proxy that stalls) defeats both. On expiry the connection is
    closed, since the protocol is mid-message, which SQLAlchemy reads as a disconnect: the
    connection leaves the pool and :meth:`Database.session` answers 503.
    """

    answer_within: float | None = None

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        """psycopg >= 3.3 routes every network wait of a connection and its cursors through
        here; ``timeout`` is set by callers with their own deadline (``notifies``)."""
        if timeout is not None or self.answer_within is None:
            return super().wait(gen, interval=interval, timeout=timeout)
        try:
            return super().wait(gen, interval=interval, timeout=self.answer_within)
        except psycopg.errors._WaitTimeout as exc:  # psycopg's (private) wait expiry
            self.close()
            raise _NoAnswer(
                f"no answer from the database within {self.answer_within:g} s") from exc


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

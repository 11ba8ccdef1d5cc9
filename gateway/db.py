"""Database plumbing shared by the ledger and the job tables: the declarative base, engines, transactions.

PostgreSQL in production, SQLite embedded. SQLite transactions start with ``BEGIN IMMEDIATE`` (the write
lock is taken up front, so a reservation's check and write cannot interleave with another process), and a
lock that outlasts the bounded retries surfaces as ``DatabaseBusy`` (503), never as a 500.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from gateway.errors import DatabaseBusy

T = TypeVar("T")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are refused: the database stores UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class Timeouts:
    """Bounds on every PostgreSQL connection, so a database that stops answering fails a call instead of
    holding it (and the task that made it) for ever: connecting, a statement, waiting for a lock, a
    transaction left idle. TCP keepalives find a connection whose peer vanished without closing it."""

    connect_seconds: int = 10
    statement_seconds: float = 60.0
    lock_seconds: float = 30.0
    idle_in_transaction_seconds: float = 120.0
    keepalive_idle_seconds: int = 30


def make_engine(url: str, *, pool_size: int = 10, timeouts: Timeouts = Timeouts(), **options: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 5, "check_same_thread": False})
        _make_sqlite_serialisable(engine)
        return engine
    connect_args = {
        "connect_timeout": timeouts.connect_seconds,
        "keepalives": 1,
        "keepalives_idle": timeouts.keepalive_idle_seconds,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    options.setdefault("max_overflow", pool_size)
    engine = create_engine(url, pool_size=pool_size, pool_pre_ping=True, connect_args=connect_args, **options)
    bound_postgresql_sessions(engine, timeouts)
    return engine


def bound_postgresql_sessions(engine: Engine, timeouts: Timeouts) -> None:
    """Set the statement, lock and idle-transaction timeouts on each new connection (as session settings: the
    URL's own ``options``, e.g. a search_path, stay as they are)."""
    settings = {
        "statement_timeout": int(timeouts.statement_seconds * 1000),
        "lock_timeout": int(timeouts.lock_seconds * 1000),
        "idle_in_transaction_session_timeout": int(timeouts.idle_in_transaction_seconds * 1000),
    }

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cursor:
            for name, value in settings.items():
                cursor.execute(f"SET {name} = {value}")
        dbapi_conn.commit()


def _make_sqlite_serialisable(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _is_transient(exc: BaseException) -> bool:
    """Lock contention (SQLite), or a serialisation failure or deadlock (PostgreSQL): safe to retry whole. A
    lock timeout is not retried: six of them would hold a caller for minutes."""
    if isinstance(exc, OperationalError) and "database is locked" in str(exc):
        return True
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "sqlstate", None)
        return code in ("40001", "40P01")
    return False


class Database:
    """An engine and its session factory; ``run`` executes one unit of work in one transaction."""

    def __init__(self, engine: Engine, *, busy_retries: int = 5) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.busy_retries = busy_retries

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any exception."""
        with self.sessions() as session, session.begin():
            yield session

    def run(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a transaction, retrying the whole unit on transient contention."""
        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(self.busy_retries + 1),
            wait=wait_random_exponential(multiplier=0.01, max=0.5),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt, self.session() as session:
                    return work(session)
        except (OperationalError, DBAPIError) as exc:
            if _is_transient(exc):
                raise DatabaseBusy("the database is busy; try again shortly", retry_after=1) from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def dispose(self) -> None:
        self.engine.dispose()

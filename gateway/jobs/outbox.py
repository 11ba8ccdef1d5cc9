"""Waking forwarders across replicas: PostgreSQL ``NOTIFY`` on every new outbox entry, ``LISTEN`` in each forwarder.

The outbox is the truth and polling stays the safety net (a lost notification only costs one poll interval);
the notification only saves that wait. ``NOTIFY`` is transactional: it is delivered when the entry's
transaction commits and never for one rolled back. Its payload names the process that queued the entry
(``origin``): that process wakes its own forwarder directly once it commits, so its listener skips its own
notifications, which would only send the forwarder looking again for what it has just claimed. SQLite has
no such thing, and needs none: an embedded gateway is one process, woken by its own submit route.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, cast

import psycopg
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from gateway.jobs.models import OutboxEntry

log = logging.getLogger("antenna.forwarder")
CHANNEL = "antenna_outbox"


def queue(session: Session, entry: OutboxEntry, *, origin: str = "") -> None:
    """Add ``entry`` to the outbox and, on PostgreSQL, tell every listening forwarder once this commits
    (every one but ``origin``'s, which its caller wakes itself)."""
    session.add(entry)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(CHANNEL, origin)))


class OutboxListener:
    """A thread holding one connection in ``LISTEN``, calling ``on_notify`` (thread-safe) for each entry queued
    by another process, with that process's origin ("" after reconnecting: whatever came meanwhile).

    The connection is taken out of the engine's pool for good (it must stay in autocommit and keep
    listening); after an error it is dropped and a new one is asked from the engine, with backoff.
    """

    def __init__(
        self,
        engine: Engine,
        on_notify: Callable[[str], None],
        *,
        origin: str = "",
        timeout: float = 1.0,
        on_health: Callable[[Exception | None], None] = lambda _: None,
    ) -> None:
        self.engine = engine
        self.on_health = on_health  # None: listening; an exception: it could not (the supervisor's view)
        self.on_notify = on_notify
        self.origin = origin  # notifications with this payload come from this process: not called for them
        self.timeout = timeout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.backend_pid: int | None = None  # PostgreSQL's process of the last connection that listened

    @staticmethod
    def applies_to(engine: Engine) -> bool:
        return engine.dialect.name == "postgresql"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="antenna-outbox-listener", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._listen()
            except (SQLAlchemyError, psycopg.Error, OSError) as exc:
                log.warning(
                    "outbox listener lost its connection; forwarders poll meanwhile",
                    extra={"error": type(exc).__name__},
                )
                self._report(exc)
            except Exception as exc:  # a bug: say so loudly and keep trying, rather than let the thread die unseen
                log.exception("outbox listener failed")
                self._report(exc)
            # A connection that listened resets the backoff: it starts again from 1 s.
            failures = 0 if self.backend_pid is not None else failures + 1
            self._stop.wait(min(2.0**failures, 30.0))

    def _report(self, failure: Exception | None) -> None:
        """Tell the supervisor, unless stopping (a listener cut short by shutdown has not failed); a report
        that fails must not end the thread."""
        if not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.on_health(failure)

    def _listen(self) -> None:
        self.backend_pid = None
        raw = self.engine.raw_connection()
        conn = cast("psycopg.Connection[Any]", raw.driver_connection)
        raw.detach()  # never back into the pool: it stays in autocommit, listening
        try:
            conn.rollback()  # the pool's pre-ping may have opened a transaction; autocommit needs none
            conn.autocommit = True
            conn.execute(f"LISTEN {CHANNEL}")
            self.backend_pid = conn.info.backend_pid
            self._report(None)
            self.on_notify("")  # whatever was queued while no connection listened
            while not self._stop.is_set():
                for notification in conn.notifies(timeout=self.timeout):
                    if not self.origin or notification.payload != self.origin:
                        self.on_notify(notification.payload)
        finally:
            raw.close()

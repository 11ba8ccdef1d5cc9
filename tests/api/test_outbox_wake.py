"""Forwarders on other replicas are woken by PostgreSQL NOTIFY when a job is accepted, instead of finding it
at their next poll of the outbox; the listener survives losing its connection. Real PostgreSQL.

Every forwarder here polls once an hour: only the notification can make a job go out within the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import text

from gateway.db import make_engine
from gateway.jobs.forwarder import Forwarder
from gateway.jobs.outbox import CHANNEL, OutboxListener
from tests.api.harness import ALICE, Gateway, open_gateway
from tests.support.idp import LoopbackIdP

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]
HOURLY = {"forwarder": {"enabled": True, "poll_seconds": 3600}}


@asynccontextmanager
async def running(forwarder: Forwarder) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(forwarder.run_forever(stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def delivered(api: Gateway, job: dict[str, Any]) -> dict[str, Any]:
    for _ in range(200):  # bounded rounds, not a timed assertion
        shown = await api.job(job["id"])
        if shown["site_job_id"] is not None:
            return shown
        await anyio.sleep(0.05)
    raise AssertionError(f"job {job['id']} was not delivered: the forwarder was not woken")


async def listening(forwarder: Forwarder, *, not_pid: int | None = None) -> int:
    """The backend pid of the forwarder's LISTEN connection once it listens (on a connection other than
    ``not_pid``), checked in PostgreSQL's own view of its sessions."""
    for _ in range(200):
        pid = forwarder.listener.backend_pid if forwarder.listener is not None else None
        if pid is not None and pid != not_pid and _listens(forwarder, pid):
            return pid
        await anyio.sleep(0.05)
    raise AssertionError("the forwarder never started listening")


def _listens(forwarder: Forwarder, pid: int) -> bool:
    query = "SELECT query FROM pg_stat_activity WHERE pid = :pid"
    with forwarder.db.engine.connect() as conn:
        return str(conn.execute(text(query), {"pid": pid}).scalar() or "").startswith("LISTEN")


@asynccontextmanager
async def two_replicas(tmp_path: Path, idp: LoopbackIdP, pg_url: str) -> AsyncIterator[tuple[Gateway, Forwarder]]:
    """An API replica that runs no forwarder, and another replica's forwarder, running and listening."""
    async with (
        open_gateway(tmp_path / "api", idp, database_url=pg_url) as api,
        open_gateway(tmp_path / "worker", idp, database_url=pg_url, seed=False, **HOURLY) as worker,
        running(worker.rt.forwarder),
    ):
        yield api, worker.rt.forwarder


async def test_a_job_accepted_by_one_replica_wakes_the_forwarder_of_another(
    tmp_path: Path, test_idp: LoopbackIdP, pg_url: str
) -> None:
    async with two_replicas(tmp_path, test_idp, pg_url) as (api, forwarder):
        await listening(forwarder)
        shown = await delivered(api, await api.submit(ALICE, script="#!/bin/bash\nsleep 5\n"))
        assert shown["state"] == "submitted"


async def test_the_listener_comes_back_after_its_connection_is_killed(
    tmp_path: Path, test_idp: LoopbackIdP, pg_url: str
) -> None:
    async with two_replicas(tmp_path, test_idp, pg_url) as (api, forwarder):
        old = await listening(forwarder)
        with forwarder.db.engine.connect() as conn:  # what a database restart or failover does to it
            conn.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": old})  # waits until it is gone
        await listening(forwarder, not_pid=old)  # a new connection, listening again (after the 1 s backoff)
        shown = await delivered(api, await api.submit(ALICE, script="#!/bin/bash\nsleep 5\n"))
        assert shown["state"] == "submitted"


async def test_a_listener_skips_the_notifications_of_its_own_process(pg_url: str) -> None:
    """Its own process wakes its forwarder directly when it commits; its notifications would only send the
    forwarder looking again for what it has just claimed."""
    engine = make_engine(pg_url)
    heard: list[str] = []
    listener = OutboxListener(engine, heard.append, origin="fwd-this-process")
    listener.start()
    try:
        for _ in range(200):  # bounded: until it listens (it then calls once, for whatever came before)
            if heard:
                break
            await anyio.sleep(0.05)
        with engine.begin() as conn:  # one session: PostgreSQL delivers its notifications in this order
            for origin in ("fwd-this-process", "fwd-another-replica", "fwd-this-process", "end-of-test"):
                conn.execute(text("SELECT pg_notify(:channel, :origin)"), {"channel": CHANNEL, "origin": origin})
        for _ in range(200):
            if "end-of-test" in heard:
                break
            await anyio.sleep(0.05)
        assert heard == ["", "fwd-another-replica", "end-of-test"]
    finally:
        await asyncio.to_thread(listener.stop)
        engine.dispose()

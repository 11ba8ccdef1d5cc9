"""A database that fails never stops forwarding silently (issue item 2): a PostgreSQL of the test's own is
stopped and started again under a gateway with queued jobs. While it is down the forwarder's loop fails,
backs off and goes on, and ``/readyz`` says the replica is not ready and why; once it is back every job is
delivered, none lost, none twice. The site is the ``local`` connector: what is under test is the gateway's
own database, not a site."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.connectors.base import stamp
from gateway.connectors.local import LocalConnector
from gateway.jobs.invariants import check_jobs
from gateway.ledger.service import check_invariants
from tests.api.harness import SITE, open_gateway
from tests.support.idp import LoopbackIdP
from tests.support.own_postgres import own_postgres

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


async def test_item2_a_database_restart_under_queued_jobs_delivers_each_once_and_readyz_says_so(
    tmp_path: Path, test_idp: LoopbackIdP
) -> None:
    with own_postgres() as server:
        forwarder = {"enabled": True, "poll_seconds": 0.1, "backoff_base_seconds": 0.1}
        database = {"connect_timeout_seconds": 2}
        limits = {"requests_per_minute": 100_000}  # the test polls the API
        async with open_gateway(
            tmp_path, test_idp, database_url=server.url, forwarder=forwarder, database=database, limits=limits
        ) as gw:
            gw.rt.supervisor.backoff_max = 1.0
            jobs = [(await gw.submit())["id"] for _ in range(6)]
            server.stop()  # queued, and the database goes away before the forwarder has taken any
            await gw.rt.start_background()
            for _ in range(300):  # bounded: until the replica says it is not ready, and why
                ready = await gw.client.get("/readyz")
                if ready.status_code == 503 and "loop:forwarder" in ready.json()["checks"]:
                    break
                await asyncio.sleep(0.1)
            assert ready.status_code == 503, ready.text
            assert ready.json()["checks"]["database"].startswith("error")

            server.start()
            for _ in range(600):  # bounded: until every job has run at the site and been settled
                states = {(await gw.job(job_id))["state"] for job_id in jobs}
                if states == {"completed"}:
                    break
                await asyncio.sleep(0.1)
            assert states == {"completed"}
            connector = gw.rt.connectors[SITE]
            assert isinstance(connector, LocalConnector)
            names = [record.name for record in connector._records.values()]
            assert sorted(names) == sorted(stamp(job_id) for job_id in jobs)  # each once, none lost
            for _ in range(300):  # bounded: the readiness loop's next round sees the database again
                ready = await gw.client.get("/readyz")
                if ready.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert ready.status_code == 200, ready.text
            assert gw.rt.db.run(lambda s: check_invariants(s) + check_jobs(s)) == []

"""Forwarding under contention and pressure: several forwarders on one PostgreSQL, a site that throttles with
429, and a site that answers slowly, each against the real stack.

The 429 and the slowness come from a small proxy in front of the real slurmrestd (tests/faults/proxy.py):
Slurm 22.05 has no rate limiter (`rl_enable` came with 23.02), and a proxy's delay is exact where
`tc netem` would need a network namespace.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.clock import FakeClock, SystemClock
from gateway.connectors.health import SiteHealth
from gateway.connectors.registry import build_connectors
from gateway.db import Database, make_engine
from gateway.jobs.forwarder import Forwarder
from gateway.jobs.models import OutboxEntry
from gateway.metrics import Metrics
from gateway.settings import ForwarderSettings
from tests.faults.proxy import proxy_to
from tests.faults.stackgw import StackGateway, site_jobs_named, stack_gateway, stack_sites
from tests.stack.plugin import SlurmStack
from tests.support.idp import LoopbackIdP

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

TRUE = "#!/bin/bash\ntrue\n"


async def wait_until_submitted(gw: StackGateway, job_ids: list[str], *, rounds: int = 400) -> dict[str, Any]:
    """Poll the API (not the forwarder) until every job has its site job id; bounded by rounds."""
    for _ in range(rounds):
        jobs = {job_id: await gw.job(job_id) for job_id in job_ids}
        if all(job["site_job_id"] for job in jobs.values()):
            return jobs
        await asyncio.sleep(0.1)
    missing = [job_id for job_id, job in jobs.items() if not job["site_job_id"]]
    raise AssertionError(f"{len(missing)} jobs never got a site job id: {missing[:5]}")


def assert_once_at_site(stack: SlurmStack, jobs: dict[str, Any]) -> None:
    """Each gateway job exists at its site exactly once, and it is the job the gateway recorded."""
    for site in {job["site"] for job in jobs.values()}:
        mine = {f"antenna-{job_id}": job for job_id, job in jobs.items() if job["site"] == site}
        at_site = site_jobs_named(stack, site, mine)
        assert {name: ids for name, ids in at_site.items() if len(ids) != 1} == {}
        assert {name: ids[0] for name, ids in at_site.items()} == {n: j["site_job_id"] for n, j in mine.items()}


async def test_several_forwarders_on_postgresql_deliver_each_job_exactly_once(
    slurm_stack: SlurmStack, test_idp: LoopbackIdP, tmp_path: Path, pg_url: str
) -> None:
    async with stack_gateway(slurm_stack, test_idp, tmp_path, database_url=pg_url) as gw:
        jobs = [await gw.submit(site="lumi", partition="small", script=TRUE) for _ in range(24)]
        jobs += [await gw.submit(site="lucia", partition="batch", script=TRUE) for _ in range(16)]
        # Four forwarders as four replicas run them: each its own engine, connectors, circuit and metrics,
        # sharing nothing but the database; small batches so that they interleave.
        settings = ForwarderSettings(batch_size=2, poll_seconds=0.05)
        workers, parts = [], []
        for _ in range(4):
            db = Database(make_engine(pg_url, pool_size=4))
            clock = SystemClock()
            connectors = build_connectors(gw.rt.settings, secrets=gw.secrets, data_dir=tmp_path, clock=clock)
            metrics = Metrics()
            workers.append(
                Forwarder(
                    db=db,
                    connectors=connectors,
                    health=SiteHealth(clock),
                    settings=settings,
                    clock=clock,
                    metrics=metrics,
                    max_in_flight_per_site=2,
                )
            )
            parts.append((db, connectors, metrics))
        stop = asyncio.Event()
        running = [asyncio.create_task(worker.run_forever(stop)) for worker in workers]
        try:
            submitted = await wait_until_submitted(gw, [j["id"] for j in jobs])
        finally:
            stop.set()
            await asyncio.gather(*running)
            for db, connectors, _ in parts:
                for connector in connectors.values():
                    await connector.aclose()
                db.dispose()

        delivered = [
            sum(
                metrics.registry.get_sample_value(
                    "antenna_forwarder_deliveries_total", {"site": site, "action": "submit", "outcome": "delivered"}
                )
                or 0
                for site in ("lumi", "lucia")
            )
            for _, _, metrics in parts
        ]
        assert sum(delivered) == len(jobs)  # no entry was delivered twice
        assert sum(1 for n in delivered if n) >= 2  # and the work really was shared
        assert_once_at_site(slurm_stack, submitted)


async def test_a_site_answering_429_gets_no_retry_storm(
    slurm_stack: SlurmStack, test_idp: LoopbackIdP, tmp_path: Path
) -> None:
    clock = FakeClock(datetime.now(UTC))
    with proxy_to(str(slurm_stack.cluster("lumi").slurmrestd_url)) as proxy:
        sites = stack_sites(slurm_stack, lumi={"options": {"url": proxy.url}})
        async with stack_gateway(slurm_stack, test_idp, tmp_path, sites=sites, clock=clock) as gw:
            proxy.throttle_seconds = 5
            jobs = [await gw.submit(site="lumi", partition="small", script=TRUE) for _ in range(30)]
            for _ in range(20):  # the clock stands still: Retry-After never passes
                await gw.rt.forwarder.run_once()
                await gw.rt.sync.run_once()
            first = proxy.snapshot()
            # Only the deliveries already in flight met the 429; then nothing at all.
            assert 1 <= first.requests <= gw.rt.forwarder.max_in_flight
            assert first.throttled == first.requests
            assert gw.metric("antenna_connector_errors_total", site="lumi", kind="rate-limited") == first.requests
            assert gw.rt.health.is_up("lumi")  # throttled is not down

            clock.advance(6)  # Retry-After has passed: ONE probe goes, not thirty submissions
            await gw.rt.forwarder.run_once()
            await gw.rt.sync.run_once()
            probed = proxy.snapshot()
            assert probed.requests == first.requests + 1
            assert probed.by_method.get("GET", 0) == first.by_method.get("GET", 0) + 1

            proxy.throttle_seconds = 0
            clock.advance(6)
            done = await gw.drive([j["id"] for j in jobs], {"completed"})
            assert_once_at_site(slurm_stack, done)

            def attempts(session: Any) -> list[int]:
                return list(session.scalars(select(OutboxEntry.attempts).where(OutboxEntry.action == "submit")))

            # No job spent more than the attempt the 429 cost it and the one that delivered it.
            assert max(gw.rt.db.run(attempts)) <= 2


async def test_a_slow_site_does_not_delay_other_sites(
    slurm_stack: SlurmStack, test_idp: LoopbackIdP, tmp_path: Path
) -> None:
    with proxy_to(str(slurm_stack.cluster("jupiter").slurmrestd_url)) as proxy:
        sites = stack_sites(slurm_stack, jupiter={"options": {"url": proxy.url, "timeout_seconds": 120}})
        async with stack_gateway(slurm_stack, test_idp, tmp_path, sites=sites) as gw:
            proxy.release.clear()  # jupiter answers nothing until the test lets it
            stop = asyncio.Event()
            forwarder = asyncio.create_task(gw.rt.forwarder.run_forever(stop))
            try:
                slow = [await gw.submit(site="jupiter", partition="booster", script=TRUE) for _ in range(3)]
                assert await asyncio.to_thread(proxy.held.wait, 60)
                # Submitted while the forwarder is waiting on jupiter: they must not wait with it.
                fast = [await gw.submit(site="lumi", partition="small", script=TRUE) for _ in range(10)]
                fast += [await gw.submit(site="lucia", partition="batch", script=TRUE) for _ in range(5)]
                delivered = await wait_until_submitted(gw, [j["id"] for j in fast])
                # ... while jupiter still holds the gateway's FIRST requests: none has timed out or been retried.
                assert proxy.snapshot().requests == proxy.snapshot().holding == len(slow)
                assert {(await gw.job(j["id"]))["state"] for j in slow} == {"accepted"}
                proxy.release.set()
                delivered |= await wait_until_submitted(gw, [j["id"] for j in slow])
            finally:
                proxy.release.set()
                stop.set()
                await forwarder
            assert_once_at_site(slurm_stack, delivered)

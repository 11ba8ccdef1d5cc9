"""slurmrestd stopped, then restarted, under a running gateway.

The daemon is a real slurmrestd of the test's own in front of the stack's `lumi` cluster (tests/faults/
daemons.py), so stopping it leaves the stack's shared daemons alone. The gateway runs on a clock the test
moves, so the circuit breaker's cooldown passes when the test says, not after a wait.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from gateway.clock import FakeClock
from tests.faults.daemons import PrivateSlurmrestd
from tests.faults.stackgw import ALICE, StackGateway, site_jobs_named, stack_gateway, stack_sites
from tests.stack.plugin import SlurmStack
from tests.support.idp import LoopbackIdP

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SCRIPT = "#!/bin/bash\nsleep 1\n"


@pytest.fixture
def rest(slurm_stack: SlurmStack, tmp_path: Path) -> Iterator[PrivateSlurmrestd]:
    daemon = PrivateSlurmrestd(slurm_stack.cluster("lumi"), tmp_path)
    daemon.start()
    yield daemon
    daemon.stop()


def count_requests(gw: StackGateway, site: str) -> list[httpx.Request]:
    """Every HTTP request the site's connector sends from now on."""
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    gw.rt.connectors[site].http.event_hooks["request"].append(record)  # type: ignore[attr-defined]
    return sent


async def test_jobs_queue_while_slurmrestd_is_down_and_each_reaches_the_site_once_after(
    slurm_stack: SlurmStack, test_idp: LoopbackIdP, tmp_path: Path, rest: PrivateSlurmrestd
) -> None:
    clock = FakeClock(datetime.now(UTC))
    sites = stack_sites(slurm_stack, lumi={"options": {"url": rest.url}})
    async with stack_gateway(slurm_stack, test_idp, tmp_path, sites=sites, clock=clock) as gw:
        gw.rt.health.cooldown = 30.0  # production's: while the clock stands still the circuit stays open
        sent = count_requests(gw, "lumi")
        rest.stop()

        jobs = [await gw.submit(site="lumi", partition="small", script=SCRIPT) for _ in range(6)]
        assert {j["state"] for j in jobs} == {"accepted"}
        await gw.rt.forwarder.run_once()
        first_wave = len(sent)  # the deliveries already in flight when the site was found down
        assert 1 <= first_wave <= gw.rt.forwarder.max_in_flight
        assert not gw.rt.health.is_up("lumi")
        for _ in range(10):
            clock.advance(1)  # past every backoff, never past the 30 s cooldown
            await gw.rt.forwarder.run_once()
            await gw.rt.sync.run_once()
        assert len(sent) == first_wave  # the open circuit sends nothing more
        errors = gw.metric("antenna_connector_errors_total", site="lumi", kind="unavailable")
        assert errors == first_wave
        ready = await gw.client.get("/readyz")
        assert ready.json()["checks"]["site:lumi"].startswith("down: lumi: slurmrestd unreachable")
        listed = await gw.client.get("/v1/sites", headers=gw.auth_of(jobs[0]))
        assert {s["name"]: s["healthy"] for s in listed.json()}["lumi"] is False
        for job in jobs:
            assert (await gw.job(job["id"]))["state"] == "accepted"  # queued, not rejected
        reserved = sum(Decimal(str(j["reserved"])) for j in jobs)
        assert (await gw.balance("lumi", "cpu-core-hours"))["reserved"] == reserved

        rest.start()
        clock.advance(31)  # the cooldown passes: one health probe, then the queue drains
        done = await gw.drive([j["id"] for j in jobs], {"completed"})
        assert gw.rt.health.is_up("lumi")

        at_site = site_jobs_named(slurm_stack, "lumi", [f"antenna-{j['id']}" for j in jobs])
        assert at_site == {
            f"antenna-{job_id}": [job["site_job_id"]] for job_id, job in done.items()
        }  # every job exactly once, and it is the one the gateway recorded
        balance = await gw.balance("lumi", "cpu-core-hours")
        assert balance["reserved"] == 0
        assert balance["charged"] + balance["overrun"] == sum(Decimal(str(j["charged"])) for j in done.values())


async def test_a_site_set_to_refuse_answers_503_while_slurmrestd_is_down(
    slurm_stack: SlurmStack, test_idp: LoopbackIdP, tmp_path: Path, rest: PrivateSlurmrestd
) -> None:
    clock = FakeClock(datetime.now(UTC))
    sites = stack_sites(slurm_stack, lumi={"options": {"url": rest.url}, "when_unavailable": "refuse"})
    async with stack_gateway(slurm_stack, test_idp, tmp_path, sites=sites, clock=clock) as gw:
        await gw.rt.sync.run_once()  # an idle site is probed each cycle
        assert gw.rt.health.is_up("lumi")
        rest.stop()
        for _ in range(3):
            await gw.rt.sync.run_once()
            clock.advance(1)
        assert not gw.rt.health.is_up("lumi")

        refused = await gw.post_job(site="lumi", partition="small", script=SCRIPT)
        assert refused.status_code == 503
        assert refused.json()["type"].endswith("/site-unavailable")
        assert "lumi" in refused.json()["detail"]
        assert (await gw.balance("lumi", "cpu-core-hours"))["reserved"] == 0  # nothing reserved
        listed = await gw.client.get("/v1/jobs", headers=gw.auth(ALICE))
        assert listed.json()["jobs"] == []  # no job row either
        other = await gw.submit(site="lucia", partition="batch", script=SCRIPT)  # other sites still take work
        assert other["state"] == "accepted"

        rest.start()
        clock.advance(31)
        await gw.rt.sync.run_once()  # the half-open probe finds the site back
        assert gw.rt.health.is_up("lumi")
        accepted = await gw.post_job(site="lumi", partition="small", script=SCRIPT)
        assert accepted.status_code == 202, accepted.text
        await gw.drive([accepted.json()["id"], other["id"]], {"completed"})

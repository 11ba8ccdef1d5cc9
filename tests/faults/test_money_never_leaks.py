"""Money and jobs never leak on the paths around the ledger: an answer lost after the site accepted a job, a
cancel while the submission is in flight, a forwarder paused past its lease, a replica that does not know a
site. Each against the real stack's slurmrestd (lumi), through the fault proxy of tests/faults/proxy.py, and
each ends with the ledger's invariants and the job-ledger invariant (never sent, held, settled, resolved).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from gateway.clock import SystemClock
from gateway.connectors.health import SiteHealth
from gateway.jobs.forwarder import Forwarder
from gateway.jobs.models import OutboxEntry
from gateway.metrics import Metrics
from tests.faults import forwarder_worker
from tests.faults.proxy import proxy_to
from tests.faults.stackgw import StackGateway, site_jobs_named, stack_gateway, stack_sites
from tests.faults.test_forwarding import TRUE, assert_once_at_site, wait_until_submitted
from tests.stack.plugin import SlurmStack
from tests.support.idp import LoopbackIdP

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SLEEP = "#!/bin/bash\nsleep 300\n"


async def until(what: str, check: Any, *, rounds: int = 600, pause: float = 0.05) -> None:
    """Wait for ``check()`` (bounded by rounds, not a timed assertion)."""
    for _ in range(rounds):
        if check():
            return
        await asyncio.sleep(pause)
    raise AssertionError(f"never: {what}")


async def forward_until(gw: StackGateway, job_id: str, state: str, *, rounds: int = 200) -> dict[str, Any]:
    for _ in range(rounds):
        await gw.rt.forwarder.run_once()
        job = await gw.job(job_id)
        if job["state"] == state:
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} never became {state}: {job['state']} ({job['reason']})")


async def test_item3_an_answer_lost_after_the_site_accepted_keeps_the_job_lost_and_held_until_found(
    slurm_stack: SlurmStack, test_idp: LoopbackIdP, tmp_path: Path
) -> None:
    with proxy_to(str(slurm_stack.cluster("lumi").slurmrestd_url)) as proxy:
        sites = {"lumi": stack_sites(slurm_stack, lumi={"options": {"url": proxy.url}})["lumi"]}
        forwarding = {
            "max_attempts": 2,
            "backoff_base_seconds": 0.05,
            "uncertain_retry_seconds": 0.1,
            "lost_lookup_seconds": 0.5,
        }
        async with stack_gateway(slurm_stack, test_idp, tmp_path, sites=sites, forwarder=forwarding) as gw:
            proxy.drop_answers = {"POST", "GET"}  # the site does the work; the gateway never hears of it
            job = await gw.submit(site="lumi", partition="small", script=TRUE)
            lost = await forward_until(gw, job["id"], "lost")

            # The site has it, the gateway cannot tell: the reservation stays held, nothing was voided.
            assert lost["reserved"] == job["reserved"]
            assert lost["charged"] is None
            assert (await gw.balance("lumi", "cpu-core-hours"))["reserved"] == Decimal(job["reserved"])
            assert len(site_jobs_named(slurm_stack, "lumi", [f"antenna-{job['id']}"])[f"antenna-{job['id']}"]) == 1
            assert proxy.snapshot().by_method["POST"] == 1
            gw.assert_sound()

            proxy.drop_answers = set()  # the site answers again: the lost job is found by its stamp and settled
            done = await gw.drive([job["id"]], {"completed"})
            assert done[job["id"]]["site_job_id"]
            assert done[job["id"]]["charged"] is not None
            assert_once_at_site(slurm_stack, done)
            assert proxy.snapshot().by_method["POST"] == 1  # looked up, never submitted again
            gw.assert_sound()


async def test_item3_a_cancel_while_the_submission_is_in_flight_finds_the_job_then_cancels_it_there(
    slurm_stack: SlurmStack, test_idp: LoopbackIdP, tmp_path: Path
) -> None:
    with proxy_to(str(slurm_stack.cluster("lumi").slurmrestd_url)) as proxy:
        sites = {"lumi": stack_sites(slurm_stack, lumi={"options": {"url": proxy.url}})["lumi"]}
        async with stack_gateway(slurm_stack, test_idp, tmp_path, sites=sites) as gw:
            proxy.hold_answers = True
            proxy.answers.clear()  # the site accepts the job; its answer waits
            job = await gw.submit(site="lumi", partition="small", script=SLEEP)
            delivering = asyncio.create_task(gw.rt.forwarder.run_once())
            try:
                assert await asyncio.to_thread(proxy.held.wait, 60)
                r = await gw.client.delete(f"/v1/jobs/{job['id']}", headers=gw.auth_of(job))
                assert r.status_code == 202, r.text
                # Not cancelled here while the site may have it: the reservation stays held.
                assert r.json()["state"] == "accepted"
                assert (await gw.balance("lumi", "cpu-core-hours"))["reserved"] == Decimal(job["reserved"])
                gw.assert_sound()
            finally:
                proxy.answers.set()
                await delivering
            done = await gw.drive([job["id"]], {"cancelled"})
            cancelled = done[job["id"]]
            assert cancelled["site_job_id"]  # found, and cancelled at the site
            assert_once_at_site(slurm_stack, done)
            at_site = slurm_stack.run(
                "lumi", ["sacct", "-n", "-X", "-P", "-o", "State", "-j", cancelled["site_job_id"]]
            )
            assert at_site.stdout.split()[0].startswith("CANCELLED"), at_site.stdout
            gw.assert_sound()


async def test_item4_a_forwarder_paused_past_its_lease_neither_submits_again_nor_releases_the_new_holder(
    slurm_stack: SlurmStack, test_idp: LoopbackIdP, tmp_path: Path, pg_url: str
) -> None:
    lease = 12  # seconds; a delivery gives up after half of it
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.faults.forwarder_worker"])
    with proxy_to(str(slurm_stack.cluster("lumi").slurmrestd_url)) as proxy:
        sites = {"lumi": stack_sites(slurm_stack, lumi={"options": {"url": proxy.url}})["lumi"]}
        async with stack_gateway(slurm_stack, test_idp, tmp_path, sites=sites, database_url=pg_url) as gw:
            config = forwarder_worker.lumi_config(
                sites=sites,
                database_url=pg_url,
                jwt_key=slurm_stack.cluster("lumi").jwt_key,
                data_dir=tmp_path,
                lease_seconds=lease,
            )
            jobs = [(await gw.submit(site="lumi", partition="small", script=TRUE))["id"] for _ in range(3)]
            # As if an earlier attempt had crashed: the next one looks each job up before submitting it.
            gw.rt.db.run(lambda s: s.execute(update(OutboxEntry).values(attempts=1)))
            proxy.hold_methods = {"GET"}
            proxy.release.clear()
            first = context.Process(target=forwarder_worker.main, args=(config,), daemon=True)
            second = context.Process(target=forwarder_worker.main, args=(config,), daemon=True)
            first.start()
            try:
                await until("the first forwarder's lookups are held", lambda: proxy.snapshot().holding == 3)
                os.kill(first.pid or 0, signal.SIGSTOP)
                await asyncio.sleep(lease + 1)  # its leases run out while it is stopped
                proxy.hold_methods = {"POST"}  # the second forwarder's lookups pass; its submissions wait
                second.start()
                await until("the second forwarder's submissions are held", lambda: proxy.snapshot().holding == 6)
                os.kill(first.pid or 0, signal.SIGCONT)
                # The window for a stale outcome: given the time to release the second forwarder's claims
                # and to submit the jobs again, the first must do neither.
                await asyncio.sleep(2)
                assert proxy.snapshot().by_method.get("POST", 0) == 3
                proxy.release.set()
                submitted = await wait_until_submitted(gw, jobs)
                await asyncio.sleep(1)  # anything the first forwarder still sends would reach the site now
            finally:
                proxy.release.set()
                for worker in (first, second):
                    if worker.pid is not None:
                        os.kill(worker.pid, signal.SIGCONT)
                        os.kill(worker.pid, signal.SIGKILL)
                        await asyncio.to_thread(worker.join, 30)
            assert proxy.snapshot().by_method["POST"] == 3  # each job submitted once, ever
            assert_once_at_site(slurm_stack, submitted)
            gw.assert_sound()


async def test_item7_a_replica_that_does_not_know_a_site_never_claims_its_jobs(
    slurm_stack: SlurmStack, test_idp: LoopbackIdP, tmp_path: Path
) -> None:
    async with stack_gateway(slurm_stack, test_idp, tmp_path) as gw:
        job = await gw.submit(site="lucia", partition="batch", script=TRUE)
        clock = SystemClock()
        older = Forwarder(  # an older replica during a rolling deploy: it knows lumi and not lucia
            db=gw.rt.db,
            connectors={"lumi": gw.rt.connectors["lumi"]},
            health=SiteHealth(clock),
            settings=gw.rt.settings.forwarder,
            clock=clock,
            metrics=Metrics(),
        )
        assert await older.run_once() == 0
        untouched = await gw.job(job["id"])
        assert untouched["state"] == "accepted"
        assert untouched["charged"] is None
        gw.assert_sound()
        done = await gw.drive([job["id"]], {"completed"})  # the newer replica delivers it
        assert_once_at_site(slurm_stack, done)
        gw.assert_sound()

"""The gateway killed with SIGKILL between the site accepting a job and the gateway recording it, 20 times.

A forwarder process (tests/faults/forwarder_worker.py, on the real PostgreSQL) delivers to the real
slurmrestd of the stack's `lumi` cluster through a proxy that holds the answers to submissions after
slurmctld has accepted the jobs. Each kill lands at a random moment while answers are held, when jobs
exist at the site and the gateway has not recorded them. After restarts, every job must exist at the site
exactly once: the next attempt finds it by its stamp instead of submitting it again.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from gateway.jobs.models import OutboxEntry
from tests.faults import forwarder_worker
from tests.faults.proxy import proxy_to
from tests.faults.stackgw import stack_gateway, stack_sites
from tests.faults.test_forwarding import TRUE, assert_once_at_site, wait_until_submitted
from tests.stack.plugin import SlurmStack
from tests.support.idp import LoopbackIdP

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.postgres]

KILLS = 20
LEASE_SECONDS = 3  # short so that the test need not wait long for a dead worker's claims


async def test_sigkill_between_site_acceptance_and_recording_never_duplicates_a_job(
    slurm_stack: SlurmStack, test_idp: LoopbackIdP, tmp_path: Path, pg_url: str
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.faults.forwarder_worker"])
    with proxy_to(str(slurm_stack.cluster("lumi").slurmrestd_url)) as proxy:
        proxy.hold_answers = True  # the window: the jobs are at the site, their answers held until the kill
        sites = {"lumi": stack_sites(slurm_stack, lumi={"options": {"url": proxy.url}})["lumi"]}
        async with stack_gateway(slurm_stack, test_idp, tmp_path, sites=sites, database_url=pg_url) as gw:
            config = forwarder_worker.lumi_config(
                sites=sites,
                database_url=pg_url,
                jwt_key=slurm_stack.cluster("lumi").jwt_key,
                data_dir=tmp_path,
                lease_seconds=LEASE_SECONDS,
            )
            jobs: list[str] = []
            in_window = 0
            for _ in range(KILLS):
                jobs += [(await gw.submit(site="lumi", partition="small", script=TRUE))["id"] for _ in range(3)]
                proxy.answers.clear()
                worker = context.Process(target=forwarder_worker.main, args=(config,), daemon=True)
                worker.start()
                assert await asyncio.to_thread(proxy.held.wait, 60), f"no submission reached the site (seed {seed})"
                await asyncio.sleep(rng.uniform(0.0, 0.3))  # more of its submissions may reach the site meanwhile
                in_window += proxy.snapshot().holding > 0
                os.kill(worker.pid or 0, signal.SIGKILL)
                await asyncio.to_thread(worker.join, 30)
                assert worker.exitcode == -signal.SIGKILL
                proxy.answers.set()  # the answers go nowhere: their forwarder is dead
                await settle(proxy)
            assert in_window == KILLS, f"only {in_window} kills landed in the window (seed {seed})"

            last = context.Process(target=forwarder_worker.main, args=(config,), daemon=True)
            last.start()
            try:
                submitted = await wait_until_submitted(gw, jobs, rounds=1200)
            finally:
                os.kill(last.pid or 0, signal.SIGKILL)
                await asyncio.to_thread(last.join, 30)

            assert_once_at_site(slurm_stack, submitted)

            def retried(session: Any) -> int:
                return int(session.scalar(select(func.count()).where(OutboxEntry.attempts > 1)) or 0)

            # The killed workers' claims came back after their leases and were found, not resubmitted.
            assert gw.rt.db.run(retried) >= KILLS, f"seed {seed}"
            assert proxy.snapshot().by_method["POST"] == len(jobs)  # one submission per job, ever


async def settle(proxy: Any) -> None:
    """Wait until the proxy holds nothing, so that a new worker is not killed for its predecessor's hold."""
    for _ in range(100):
        if not proxy.snapshot().holding:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the proxy kept holding answers")

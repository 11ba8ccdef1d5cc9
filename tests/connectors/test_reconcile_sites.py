"""Reconciliation against each site's own accounting on the real stack: lumi's slurmdbd through slurmrestd,
lucia's ``sacct`` on its login node over SSH.

At each site, three jobs end inside the window: one through the gateway (charged by it), one that a project
member ran at the site directly on the project's account (usage the ledger never saw: the difference the
reconciliation exists to find), and one of another project at the same site. Other tests share the stack's
accounting, so the assertions look at these jobs only.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from gateway.ledger.reconcile import DifferenceKind
from tests.connectors.test_gateway_e2e import PARTITION, wait_accounted_as
from tests.faults.stackgw import PROJECT_ACCOUNTS, stack_gateway
from tests.stack.plugin import SlurmStack
from tests.support.idp import LoopbackIdP

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

#: a project at each site that the gateway does not manage (bob is a member of both)
OTHER_ACCOUNTS = {"lumi": "project_465000002", "lucia": "aifa002"}


def sbatch(stack: SlurmStack, person: str, site: str, account: str) -> str:
    """A job run at the site directly, outside the gateway: 32 cores for 3 s, about 0.027 core-hours, above
    the reconciliation's tolerance (0.01 of the unit)."""
    argv = ["sbatch", "--parsable", f"--account={account}", f"--partition={PARTITION[site]}", "--time=1"]
    result = stack.run_as(person, site, [*argv, "--cpus-per-task=32", "--output=/dev/null", "--wrap=sleep 3"])
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


async def test_each_site_is_compared_on_the_projects_accounts_and_usage_outside_the_gateway_is_found(
    slurm_stack: SlurmStack, test_idp: LoopbackIdP, tmp_path: Path
) -> None:
    async with stack_gateway(slurm_stack, test_idp, tmp_path) as gw:
        start = gw.rt.clock.now() - timedelta(seconds=5)
        through = {
            site: await gw.submit(site=site, partition=PARTITION[site], script="#!/bin/bash\nsleep 1\n")
            for site in ("lumi", "lucia")
        }
        outside = {site: sbatch(slurm_stack, "alice", site, PROJECT_ACCOUNTS[site]) for site in through}
        other = {site: sbatch(slurm_stack, "bob", site, OTHER_ACCOUNTS[site]) for site in through}
        done = await gw.drive([j["id"] for j in through.values()], {"completed"})

        for site, job in through.items():
            charged = done[job["id"]]
            ours = [charged["site_job_id"], outside[site], other[site]]
            await wait_accounted_as(slurm_stack, site, ours, "COMPLETED")
            result = await gw.rt.reconcile(site, start=start, end=gw.rt.clock.now() + timedelta(minutes=1))

            found = {d.site_job_ids: d for d in result.differences if set(d.site_job_ids) & set(ours)}
            assert list(found) == [(outside[site],)], result.summary()  # the gateway's own job matches
            difference = found[(outside[site],)]
            assert difference.kind == DifferenceKind.MISSING_IN_LEDGER
            assert difference.project == "aifa"
            assert difference.ledger_amount == 0
            assert difference.site_amount > 0
            assert result.jobs_matched >= 1
            # The other project's job was never asked for: the site returned the projects' accounts only.
            assert result.ignored_records == 0

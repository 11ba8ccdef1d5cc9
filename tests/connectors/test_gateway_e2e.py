"""End to end through the gateway on the real stack, for both connectors: lumi through slurmrestd, lucia through
its SSH login node. API submit → forwarder → Slurm → status sync → charge, with the charge checked against
the site's own accounting (``sacct`` run on the cluster: elapsed × allocated TRES, priced by hand with the
site's published formula), a job Slurm kills at its time limit, output, cancel, and the number of site
calls a status cycle costs.

Slurm enforces time limits in whole minutes and checks them about every 30 s, so the time-limit jobs take
60–90 s; they run alongside the short jobs in one test to pay that once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from gateway.connectors.slurmrestd import SlurmrestdConnector
from gateway.connectors.ssh import SshConnector
from tests.faults.stackgw import StackGateway, stack_gateway
from tests.stack.plugin import SlurmStack
from tests.support.idp import LoopbackIdP

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SHORT = "#!/bin/bash\necho hello from $SLURM_JOB_ID\nsleep 2\necho bye >&2\n"
OVERRUN = "#!/bin/bash\necho started\nsleep 600\n"


def lumi_small(cores: int, mem_gb: Fraction) -> Fraction:
    """LUMI small: max(cores, ceil(mem_GB / 2)) core-hours per hour (LUMI billing policy)."""
    return Fraction(max(cores, math.ceil(mem_gb / 2)))


def lucia_batch(cores: int, mem_gb: Fraction) -> Fraction:
    """Lucia batch (cns, weight 1): MAX(req_cpu, req_mem_GB × 128 / 240) BUh per hour (Lucia documentation)."""
    return max(Fraction(cores), mem_gb * 128 / 240)


FORMULAS: dict[str, Callable[[int, Fraction], Fraction]] = {"lumi": lumi_small, "lucia": lucia_batch}
PARTITION = {"lumi": "small", "lucia": "batch"}
UNIT = {"lumi": "cpu-core-hours", "lucia": "buh"}


def accounted(stack: SlurmStack, site: str, site_job_id: str) -> tuple[int, int, Fraction]:
    """(elapsed seconds, allocated cores, allocated memory GB) as the cluster's accounting recorded them."""
    result = stack.run(
        site,
        ["sacct", "-X", "--noheader", "--parsable2", f"--jobs={site_job_id}", "--format=ElapsedRaw,AllocTRES"],
    )
    assert result.returncode == 0, result.stderr
    elapsed, tres = result.stdout.strip().splitlines()[0].split("|")
    fields = dict(item.split("=", 1) for item in tres.split(","))
    memory = fields["mem"]
    mem_gb = Fraction(memory[:-1]) * (
        1024 if memory.endswith("T") else 1 if memory.endswith("G") else Fraction(1, 1024)
    )
    return int(elapsed), int(fields["cpu"]), mem_gb


def expected_charge(site: str, elapsed: int, cores: int, mem_gb: Fraction) -> Fraction:
    """The site's formula × wall-clock hours, rounded up to the ledger's quantum (0.000001)."""
    exact = FORMULAS[site](cores, mem_gb) * Fraction(elapsed, 3600)
    return Fraction(math.ceil(exact * 1_000_000), 1_000_000)


async def test_jobs_run_end_to_end_and_are_charged_from_the_sites_accounting(
    slurm_stack: SlurmStack, test_idp: LoopbackIdP, tmp_path: Path
) -> None:
    async with stack_gateway(slurm_stack, test_idp, tmp_path) as gw:
        short, overrun = {}, {}
        for site in ("lumi", "lucia"):
            short[site] = await gw.submit(site=site, partition=PARTITION[site], cores=2, memory_gb=4, script=SHORT)
            overrun[site] = await gw.submit(
                site=site, partition=PARTITION[site], cores=1, memory_gb=1, time_limit=1, script=OVERRUN
            )
        ids = [j["id"] for j in (*short.values(), *overrun.values())]
        done = await gw.drive(ids, {"completed", "timeout"}, rounds=1200)

        for site in ("lumi", "lucia"):
            job = done[short[site]["id"]]
            assert job["state"] == "completed"
            states = [event["state"] for event in job["history"]]
            assert states[:2] == ["accepted", "submitted"]
            assert states[-2:] == ["running", "completed"]
            elapsed, cores, mem_gb = accounted(slurm_stack, site, job["site_job_id"])
            assert (cores, mem_gb) == (2, 4)
            assert elapsed >= 2
            assert Fraction(str(job["charged"])) == expected_charge(site, elapsed, cores, mem_gb)
            output = await gw.client.get(f"/v1/jobs/{job['id']}/output", headers=gw.auth_of(job))
            assert output.status_code == 200, output.text
            assert output.text == f"hello from {job['site_job_id']}\n"
            errors = await gw.client.get(
                f"/v1/jobs/{job['id']}/output", params={"stream": "stderr"}, headers=gw.auth_of(job)
            )
            assert errors.text == "bye\n"

            killed = done[overrun[site]["id"]]
            assert killed["state"] == "timeout", killed
            elapsed, cores, mem_gb = accounted(slurm_stack, site, killed["site_job_id"])
            assert elapsed >= 60  # ran to its one-minute limit, and is charged for what it ran
            assert Fraction(str(killed["charged"])) == expected_charge(site, elapsed, cores, mem_gb)

            balance = await gw.balance(site, UNIT[site])
            assert balance["reserved"] == 0  # every reservation released
            # Slurm stops a job some seconds after its limit: what exceeds the reservation is booked as overrun.
            total = Fraction(str(job["charged"])) + Fraction(str(killed["charged"]))
            assert balance["charged"] + balance["overrun"] == total


class CallCounter:
    """Counts the calls a connector makes to its site, where they leave the gateway: HTTP requests sent by the
    slurmrestd connector, SSH sessions that the login node's sshd logged for the ssh connector's account."""

    def __init__(self, gw: StackGateway, site: str) -> None:
        self.connector = gw.rt.connectors[site]
        self.log = gw.stack.ssh.log
        self.http = 0
        if isinstance(self.connector, SlurmrestdConnector):

            async def count(_: httpx.Request) -> None:
                self.http += 1

            self.connector.http.event_hooks["request"].append(count)

    def total(self) -> int:
        if isinstance(self.connector, SshConnector):
            login = self.connector._logins.get(self.connector.options.status_account)
            if login is None:
                return 0
            port = login.conn.get_extra_info("sockname")[1]
            mine = f"command for {login.account} from 127.0.0.1 port {port} "
            return sum(1 for line in self.log.read_text(errors="replace").splitlines() if mine in line)
        return self.http


async def one_cycle(gw: StackGateway, counters: dict[str, CallCounter]) -> dict[str, int]:
    before = {site: c.total() for site, c in counters.items()}
    await gw.rt.sync.run_once()
    return {site: c.total() - before[site] for site, c in counters.items()}


async def test_a_status_cycle_costs_the_same_site_calls_for_one_job_or_ten(
    slurm_stack: SlurmStack, test_idp: LoopbackIdP, tmp_path: Path
) -> None:
    sleeper = "#!/bin/bash\nsleep 300\n"
    async with stack_gateway(slurm_stack, test_idp, tmp_path) as gw:
        counters = {site: CallCounter(gw, site) for site in ("lumi", "lucia")}
        jobs: list[dict[str, Any]] = []
        calls = []
        for batch in (1, 9):
            for site in ("lumi", "lucia"):
                for _ in range(batch):
                    jobs.append(await gw.submit(site=site, partition=PARTITION[site], cores=1, script=sleeper))
            await gw.drive([j["id"] for j in jobs], {"running"})
            calls.append(await one_cycle(gw, counters))
        # Every job is live in the controller: one squeue / one GET /jobs per site, for 1 job as for 10.
        assert calls == [{"lumi": 1, "lucia": 1}, {"lumi": 1, "lucia": 1}]

        for job in jobs:
            r = await gw.client.delete(f"/v1/jobs/{job['id']}", headers=gw.auth_of(job))
            assert r.status_code == 202, r.text
        while await gw.rt.forwarder.run_once():  # deliver the cancellations
            pass
        jobs = [await gw.job(j["id"]) for j in jobs]
        for site in ("lumi", "lucia"):
            site_ids = [j["site_job_id"] for j in jobs if j["site"] == site]
            await wait_accounted_as(slurm_stack, site, site_ids, "CANCELLED")
        # One cycle sees all twenty jobs end: the controller's list plus ONE accounting call per site.
        assert await one_cycle(gw, counters) == {"lumi": 2, "lucia": 2}
        for job in jobs:
            ended = await gw.job(job["id"])
            assert ended["state"] == "cancelled"
            assert ended["charged"] is not None  # ran a few seconds: charged for them


async def wait_accounted_as(stack: SlurmStack, site: str, site_job_ids: list[str], state: str) -> None:
    """Wait until the cluster's accounting holds every job, complete, in ``state`` (bounded polling)."""
    for _ in range(240):
        result = stack.run(
            site,
            [
                "sacct",
                "-X",
                "--noheader",
                "--parsable2",
                f"--jobs={','.join(site_job_ids)}",
                "--format=JobID,State,Partition,AllocTRES",
            ],
        )
        rows = [line.split("|") for line in result.stdout.splitlines()]
        if len(rows) == len(site_job_ids) and all(r[1].startswith(state) and r[2] and "cpu=" in r[3] for r in rows):
            return
        await anyio.sleep(0.25)
    raise AssertionError(f"{site}: jobs {site_job_ids} never all reached {state} in accounting")

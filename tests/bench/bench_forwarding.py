"""Forwarding benchmark on the test stack's `lumi` cluster: submissions straight to slurmrestd against the same
submissions through the gateway (API → ledger reservation → outbox → forwarder → slurmrestd), and the slurmctld
RPCs one status-sync cycle costs with 10 and with 1,000 active jobs.

Not a test (pytest does not collect ``bench_*.py``); run it by hand, with the stack up (it starts it if not):

    uv run python tests/bench/bench_forwarding.py [--jobs 200] [--active 1000] [--write-results]

Phases, each on the real cluster and the real PostgreSQL:
  (a) direct: ``--jobs`` POSTs to slurmrestd's job/submit, 8 at a time (the forwarder's in-flight bound per
      site), each with the body the slurmrestd connector sends;
  (b) gateway: the same jobs submitted to the API (8 clients), measured from the start of each API request to
      the moment the forwarder has recorded the site's job id; (b2) the same with the forwarder in a process
      of its own (tests/faults/forwarder_worker.py), as a separate replica runs it;
  paced latency: 50 jobs one after another on each path, so that no queueing is measured, only what the
      gateway adds: in one process the submit route wakes the forwarder (``Forwarder.wake``); a forwarder in
      a process of its own is woken by PostgreSQL's NOTIFY (gateway/jobs/outbox.py);
  (c) RPCs: ``sdiag``'s per-message RPC counts around one status-sync cycle, with 10 then 1,000 active jobs,
      for lumi (slurmrestd) and lucia (ssh).
The CPU column is this process's CPU time per job (HTTP client, API, and the forwarder unless it runs
apart): unlike rates, it does not depend on what else the machine is doing.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import re
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from sqlalchemy import select

from gateway.connectors.base import SiteJobRequest
from gateway.connectors.slurm_openapi import V0038
from gateway.jobs.models import Job, JobEvent, JobState
from tests.faults import forwarder_worker
from tests.faults.stackgw import ALICE, PROJECT, QUOTA_ADMIN, StackGateway, stack_gateway, stack_sites
from tests.stack.plugin import SlurmStack, start_stack
from tests.support.db import drop_pg_schema, new_pg_schema, pg_schema_url
from tests.support.idp import LoopbackIdP

RESULTS = Path(__file__).with_name("RESULTS.md")
IN_FLIGHT = 8
SCRIPT = "#!/bin/bash\ntrue\n"
HOLDER = "#!/bin/bash\nsleep 3600\n"


@dataclass
class Phase:
    name: str
    count: int
    seconds: float
    latencies_ms: list[float]
    cpu_ms: float = 0.0  # CPU time of this process (client, API, forwarder) per job

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def p(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def line(self) -> str:
        return (
            f"| {self.name} | {self.count} | {self.seconds:.2f} | {self.rate:.1f} | "
            f"{statistics.median(self.latencies_ms):.1f} | {self.p(0.95):.1f} | {self.cpu_ms:.1f} |"
        )


# --- (a) straight to slurmrestd ----------------------------------------------------------------------------


def token(stack: SlurmStack, account: str) -> str:
    now = int(time.time())
    key = stack.cluster("lumi").jwt_key_bytes()
    return jwt.encode({"sun": account, "iat": now, "exp": now + 3600}, key, algorithm="HS256")


def request(job_id: str) -> SiteJobRequest:
    return SiteJobRequest(
        job_id=job_id,
        account="alice",
        project_account="project_465000001",
        partition="small",
        name="bench",
        script=SCRIPT,
        nodes=1,
        cores=1,
        memory_gb=2,
        gpus=0,
        time_limit_minutes=10,
    )


async def measured(phase: Any) -> Phase:
    """Run a phase coroutine and add this process's CPU time per job to its result."""
    cpu = time.process_time()
    result: Phase = await phase
    result.cpu_ms = (time.process_time() - cpu) * 1000 / result.count
    return result


async def direct(stack: SlurmStack, count: int, concurrency: int, name: str) -> Phase:
    url = str(stack.cluster("lumi").slurmrestd_url)
    headers = {"X-SLURM-USER-NAME": "alice", "X-SLURM-USER-TOKEN": token(stack, "alice")}
    api = V0038()
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def one() -> None:
            async with gate:
                body = api.submit_body(request(str(uuid.uuid4())), home="/home/alice")
                started = time.perf_counter()
                reply = await http.post("/slurm/v0.0.38/job/submit", json=body, headers=headers)
                latencies.append((time.perf_counter() - started) * 1000)
                reply.raise_for_status()
                assert reply.json()["job_id"], reply.text

        started = time.perf_counter()
        if concurrency == 1:
            for _ in range(count):
                await one()
        else:
            await asyncio.gather(*(one() for _ in range(count)))
        seconds = time.perf_counter() - started
    return Phase(name, count, seconds, latencies)


# --- (b) through the gateway -------------------------------------------------------------------------------


def submitted_at(gw: StackGateway, job_ids: list[str]) -> dict[str, float]:
    """When the forwarder recorded each job's site id (the SUBMITTED event), as epoch seconds."""

    def read(session: Any) -> dict[str, float]:
        rows = session.execute(
            select(JobEvent.job_id, JobEvent.at).where(
                JobEvent.job_id.in_(job_ids), JobEvent.state == JobState.SUBMITTED.value
            )
        )
        return {job_id: at.timestamp() for job_id, at in rows}

    result: dict[str, float] = gw.rt.db.run(read)
    return result


async def wait_submitted(gw: StackGateway, job_ids: list[str]) -> dict[str, float]:
    for _ in range(6000):
        done = submitted_at(gw, job_ids)
        if len(done) == len(job_ids):
            return done
        await asyncio.sleep(0.01)
    raise RuntimeError(f"only {len(submitted_at(gw, job_ids))} of {len(job_ids)} jobs reached the site")


async def through_gateway(gw: StackGateway, count: int, concurrency: int, name: str) -> Phase:
    gate = asyncio.Semaphore(concurrency)
    starts: dict[str, float] = {}

    async def one() -> str:
        async with gate:
            started = time.time()
            job = await gw.submit(ALICE, site="lumi", partition="small", cores=1, memory_gb=2, script=SCRIPT)
            starts[job["id"]] = started
            return str(job["id"])

    if concurrency == 1:
        ids = []
        for _ in range(count):
            ids.append(await one())
            await wait_submitted(gw, ids[-1:])  # paced: the next job only once this one is at the site
    else:
        ids = list(await asyncio.gather(*(one() for _ in range(count))))
    done = await wait_submitted(gw, ids)
    first = min(starts.values())
    latencies = [(done[i] - starts[i]) * 1000 for i in ids]
    return Phase(name, count, max(done.values()) - first, latencies)


# --- (c) slurmctld RPCs per sync cycle ---------------------------------------------------------------------

_RPC = re.compile(r"^\s*(\S+)\s+\(\s*\d+\)\s+count:(\d+)", re.M)


def rpc_counts(stack: SlurmStack, cluster: str) -> tuple[dict[str, int], dict[str, int]]:
    """sdiag's RPC counts by message type and by user."""
    out = stack.run(cluster, ["sdiag"]).stdout
    by_type, _, by_user = out.partition("Remote Procedure Call statistics by message type")[2].partition(
        "Remote Procedure Call statistics by user"
    )
    types = {name: int(count) for name, count in _RPC.findall(by_type)}
    users = {name: int(count) for name, count in _RPC.findall(by_user.split("Pending RPC statistics")[0])}
    return types, users


async def rpcs_per_cycle(gw: StackGateway, stack: SlurmStack, site: str) -> tuple[int, dict[str, int]]:
    """The RPCs slurmctld received from the site's status account during one sync cycle, and every RPC it
    received meanwhile by type (which includes whatever else runs on the machine)."""
    account = gw.rt.settings.sites[site].options["status_account"]
    types_before, users_before = rpc_counts(stack, site)
    await gw.rt.sync.sync_site(site)
    types_after, users_after = rpc_counts(stack, site)
    types = {k: v - types_before.get(k, 0) for k, v in types_after.items()}
    types["REQUEST_STATS_INFO"] = types.get("REQUEST_STATS_INFO", 0) - 1  # sdiag's own call
    return users_after.get(account, 0) - users_before.get(account, 0), {k: v for k, v in types.items() if v}


async def hold_jobs(gw: StackGateway, site: str, count: int) -> list[str]:
    """``count`` active jobs at ``site``: whole-node jobs, so all but two stay pending (and cost no memory)."""
    partition, unit, amount = {"lumi": ("standard", "cpu-core-hours", "1000000"), "lucia": ("batch", "buh", "1000000")}[
        site
    ]
    balances = await gw.client.get(f"/v1/projects/{PROJECT}/balance", headers=gw.auth(QUOTA_ADMIN))
    (current,) = [b for b in balances.json()["balances"] if b["site"] == site and b["unit"] == unit and b["active"]]
    r = await gw.client.put(
        f"/v1/projects/{PROJECT}/allocations/{site}",
        json={
            "amount": amount,
            "unit": unit,
            "start": current["period_start"],
            "end": current["period_end"],
            "project_account": {"lumi": "project_465000001", "lucia": "aifa001"}[site],
        },
        headers=gw.auth(QUOTA_ADMIN),
    )
    r.raise_for_status()
    gate = asyncio.Semaphore(8)

    async def one() -> str:
        async with gate:
            spec = {"cores": 128} if site == "lucia" else {}
            job = await gw.submit(ALICE, site=site, partition=partition, time_limit=60, script=HOLDER, **spec)
            return str(job["id"])

    ids = list(await asyncio.gather(*(one() for _ in range(count))))
    await wait_submitted(gw, ids)
    return ids


def cancel_at_site(stack: SlurmStack, gw: StackGateway, site: str) -> None:
    def read(session: Any) -> list[str]:
        return [s for s in session.scalars(select(Job.site_job_id).where(Job.site == site)) if s]

    ids = gw.rt.db.run(read)
    for chunk in range(0, len(ids), 200):
        stack.run(site, ["scancel", *ids[chunk : chunk + 200]])


def added(direct: Phase, gateway: Phase, label: str, target: str) -> str:
    base, through = statistics.median(direct.latencies_ms), statistics.median(gateway.latencies_ms)
    note = f"; {target}" if target else ""
    return f"- p50 added latency, {label}: **{through - base:.1f} ms** ({(through / base - 1) * 100:.0f} %{note})"


def start_worker(stack: SlurmStack, site: dict[str, Any], database_url: str, data_dir: str) -> Any:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.faults.forwarder_worker"])
    config = {
        "settings": {
            "database": {"url": database_url},
            "sites": {"lumi": site},
            "forwarder": {"poll_seconds": 0.5},  # the default; NOTIFY is what wakes it
        },
        "jwt_keys": {"lumi": str(stack.cluster("lumi").jwt_key)},
        "data_dir": data_dir,
        "lease_seconds": 120,
        "max_in_flight": IN_FLIGHT,
    }
    worker = context.Process(target=forwarder_worker.main, args=(config,), daemon=True)
    worker.start()
    return worker


# --- the run -----------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> str:
    stack = start_stack()
    idp = LoopbackIdP().start()
    schema = new_pg_schema()
    lines: list[str] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sites = stack_sites(stack)
            async with stack_gateway(
                stack,
                idp,
                Path(tmp),
                sites={"lumi": sites["lumi"], "lucia": sites["lucia"]},
                database_url=pg_schema_url(schema),
                limits={"max_active_jobs_per_person": 100_000},
                forwarder={"poll_seconds": 0.5},
            ) as gw:
                gw.rt.forwarder.max_in_flight = IN_FLIGHT
                stop = asyncio.Event()
                forwarding = asyncio.create_task(gw.rt.forwarder.run_forever(stop))
                await direct(stack, 20, IN_FLIGHT, "warm-up")
                await through_gateway(gw, 20, IN_FLIGHT, "warm-up")

                a = await measured(direct(stack, args.jobs, IN_FLIGHT, "(a) direct to slurmrestd, 8 in flight"))
                b = await measured(through_gateway(gw, args.jobs, IN_FLIGHT, "(b) through the gateway, 8 clients"))
                pa = await measured(direct(stack, 50, 1, "paced: direct"))
                pw = await measured(through_gateway(gw, 50, 1, "paced: gateway (its submit route wakes the forwarder)"))
                stop.set()
                await forwarding
                # The forwarder as a replica of its own (any number may run): a process beside the API's.
                worker = start_worker(stack, sites["lumi"], pg_schema_url(schema), tmp)
                try:
                    b2 = await measured(through_gateway(gw, args.jobs, IN_FLIGHT, "(b2) gateway, forwarder process"))
                    pw2 = await measured(through_gateway(gw, 50, 1, "paced: gateway, forwarder process (NOTIFY)"))
                finally:
                    worker.kill()
                    worker.join(30)
                phases = [a, b, b2, pa, pw, pw2]
                stop = asyncio.Event()
                forwarding = asyncio.create_task(gw.rt.forwarder.run_forever(stop))

                rpcs: dict[tuple[str, int], tuple[int, dict[str, int]]] = {}
                for site in ("lumi", "lucia"):
                    await hold_jobs(gw, site, 10)
                    rpcs[(site, 10)] = await rpcs_per_cycle(gw, stack, site)
                    await hold_jobs(gw, site, args.active - 10)
                    rpcs[(site, args.active)] = await rpcs_per_cycle(gw, stack, site)
                stop.set()
                await forwarding
                for site in ("lumi", "lucia"):
                    cancel_at_site(stack, gw, site)

        cpu = (platform.processor() or platform.machine()) + f", {os.cpu_count()} cores"
        lines += [
            "## Forwarding",
            "",
            f"`uv run python tests/bench/bench_forwarding.py --jobs {args.jobs} --active {args.active}` on {cpu};",
            f"Slurm {stack.slurm_version} (`lumi` cluster of tests/stack), PostgreSQL on the same machine, "
            "gateway API over ASGI in-process, one forwarder (8 deliveries in flight per site), "
            f"{time.strftime('%Y-%m-%d')}.",
            "",
            "| phase | jobs | seconds | jobs/s | p50 ms | p95 ms | CPU ms/job (this process) |",
            "|---|---|---|---|---|---|---|",
            *(p.line() for p in phases),
            "",
            f"- throughput through the gateway / direct: **{b.rate / a.rate:.2f}×** in one process, "
            f"**{b2.rate / a.rate:.2f}×** with the forwarder in its own process (target ≥ 0.9×)",
            added(pa, pw, "paced, forwarder woken by the submit route", "target ≤ 10 %"),
            added(pa, pw2, "paced, forwarder process woken by PostgreSQL NOTIFY (polls every 0.5 s)", ""),
            "",
            "slurmctld RPCs in one status-sync cycle (`sdiag` counts before and after): those of the site's "
            "status account (the gateway's), and all RPCs by type over the same moment (other work on the "
            "machine included; sdiag's own REQUEST_STATS_INFO removed):",
            "",
            "| site (connector) | active jobs | RPCs of the status account | all RPCs meanwhile, by type |",
            "|---|---|---|---|",
            *(
                f"| {site} ({'slurmrestd' if site == 'lumi' else 'ssh'}) | {n} | {mine} | "
                f"{', '.join(f'{k} {v}' for k, v in sorted(d.items())) or '-'} |"
                for (site, n), (mine, d) in rpcs.items()
            ),
            "",
        ]
    finally:
        idp.close()
        drop_pg_schema(schema)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--active", type=int, default=1000)
    parser.add_argument("--write-results", action="store_true", help=f"append the section to {RESULTS.name}")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    print(report)
    if args.write_results:
        with RESULTS.open("a") as results:
            results.write("\n" + report)


if __name__ == "__main__":
    main()

"""Forwarding benchmark on the test stack's `lumi` cluster: submissions straight to slurmrestd against the same
submissions through the gateway (API → ledger reservation → outbox → forwarder → slurmrestd), and the slurmctld
RPCs one status-sync cycle costs with 10 and with 1,000 active jobs.

Not a test (pytest does not collect ``bench_*.py``); run it by hand, with the stack up (it starts it if not):

    uv run python tests/bench/bench_forwarding.py [--jobs 200] [--active 1000] [--site-delay-ms 0] [--write-results]

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
lumi's ``small`` partition is DOWN during the timed phases: jobs queue and never start, so neither path pays for
jobs launched on the same 2 cores (a run killed midway leaves it DOWN: ``scontrol update PartitionName=small
State=UP``, or ``tests/stack/stack down`` and ``up``). A pgbench run with one client gives the floor: one durable
commit of a submission-shaped transaction.
With ``--site-delay-ms D``, both paths reach slurmrestd through a proxy that delays each direction by D ms
(tests/bench/delay.py): a site at a distance, as LUMI and JUPITER are from the gateway; (c) is then left out.
The first CPU column is this process's CPU time per job (HTTP client, API, and the forwarder unless it runs
apart): unlike rates, it does not depend on what else the machine is doing. The second is the whole machine's
(/proc/stat), slurmctld, slurmrestd and PostgreSQL included: what one job costs the 2 cores on each path.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import re
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from sqlalchemy import make_url, select

from gateway.connectors.base import SiteJobRequest
from gateway.connectors.slurm_openapi import V0038
from gateway.jobs.models import Job, JobEvent, JobState
from tests.bench.delay import delayed
from tests.faults import forwarder_worker
from tests.faults.stackgw import ALICE, PROJECT, QUOTA_ADMIN, StackGateway, stack_gateway, stack_sites
from tests.stack.plugin import SlurmStack, start_stack
from tests.support.db import PG_SERVER, drop_pg_schema, new_pg_schema, pg_schema_url
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
    machine_cpu_ms: float = 0.0  # CPU time of the whole machine per job: slurmctld, slurmrestd, PostgreSQL too
    parts_ms: dict[str, float] = field(default_factory=dict)  # the machine's CPU per job, by process

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def p(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def line(self) -> str:
        return (
            f"| {self.name} | {self.count} | {self.seconds:.2f} | {self.rate:.1f} | "
            f"{statistics.median(self.latencies_ms):.1f} | {self.p(0.95):.1f} | {self.cpu_ms:.1f} | "
            f"{self.machine_cpu_ms:.1f} |"
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


def machine_cpu_seconds() -> float:
    """CPU time spent by every process on the machine since boot, from /proc/stat (idle and iowait excluded)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


@contextmanager
def partition_down(stack: SlurmStack, cluster: str, partition: str) -> Iterator[None]:
    """Jobs queue in ``partition`` but never start: the phases measure submission, not the 2 cores also
    launching and reaping every job they submit (which made back-to-back runs differ by a factor of 5)."""
    stack.run(cluster, ["scontrol", "update", f"PartitionName={partition}", "State=DOWN"]).check_returncode()
    try:
        yield
    finally:
        stack.run(cluster, ["scancel", f"--partition={partition}", "--state=PENDING"])
        stack.run(cluster, ["scontrol", "update", f"PartitionName={partition}", "State=UP"]).check_returncode()


def clear_queue(stack: SlurmStack, cluster: str, partition: str) -> None:
    """Cancel the phase's pending jobs, so that every phase starts with the same controller state."""
    stack.run(cluster, ["scancel", f"--partition={partition}", "--state=PENDING"]).check_returncode()
    for _ in range(300):
        if not stack.run(cluster, ["squeue", "-h", f"--partition={partition}"]).stdout.strip():
            return
        time.sleep(0.1)


FORWARDER_PIDS: set[int] = set()  # forwarder processes started by this benchmark


PARTS = ("this process", "forwarder process", "PostgreSQL", "slurmctld", "slurmrestd", "delay proxy", "the rest")


def cpu_by_process() -> Counter[str]:
    """CPU seconds so far of every process on the machine, summed into PARTS (/proc/<pid>/stat)."""
    tick, own = os.sysconf("SC_CLK_TCK"), os.getpid()
    totals: Counter[str] = Counter()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended meanwhile
            continue
        pid = int(stat.parent.name)
        command, fields = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        if pid == own:
            part = "this process"
        elif pid in FORWARDER_PIDS:
            part = "forwarder process"
        elif command.startswith("postgres"):
            part = "PostgreSQL"
        elif command in ("slurmctld", "slurmrestd"):
            part = command
        elif command.startswith("python"):  # the benchmark starts no other Python process
            part = "delay proxy"
        else:
            part = "the rest"
        totals[part] += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return totals


async def measured(phase: Any) -> Phase:
    """Run a phase coroutine and add this process's and the machine's CPU time per job to its result."""
    cpu, machine, polling, parts = time.process_time(), machine_cpu_seconds(), POLL_CPU[0], cpu_by_process()
    result: Phase = await phase
    result.cpu_ms = (time.process_time() - cpu - (POLL_CPU[0] - polling)) * 1000 / result.count
    result.machine_cpu_ms = (machine_cpu_seconds() - machine) * 1000 / result.count
    spent = cpu_by_process() - parts
    spent["this process"] -= POLL_CPU[0] - polling
    result.parts_ms = {name: seconds * 1000 / result.count for name, seconds in spent.items() if seconds > 0}
    return result


async def direct(stack: SlurmStack, url: str, count: int, concurrency: int, name: str) -> Phase:
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


POLL_CPU = [0.0]  # CPU seconds this benchmark spent polling for results: not the gateway's, taken out of its figure


def submitted_at(gw: StackGateway, job_ids: list[str]) -> dict[str, float]:
    """When the forwarder recorded each job's site id (the SUBMITTED event), as epoch seconds."""
    started = time.thread_time()

    def read(session: Any) -> dict[str, float]:
        rows = session.execute(
            select(JobEvent.job_id, JobEvent.at).where(
                JobEvent.job_id.in_(job_ids), JobEvent.state == JobState.SUBMITTED.value
            )
        )
        return {job_id: at.timestamp() for job_id, at in rows}

    try:
        result: dict[str, float] = gw.rt.db.run(read)
        return result
    finally:
        POLL_CPU[0] += time.thread_time() - started


async def wait_submitted(gw: StackGateway, job_ids: list[str]) -> dict[str, float]:
    """Poll (in a thread: a query on the event loop would hold up the gateway's own work meanwhile)."""
    for _ in range(6000):
        done = await asyncio.to_thread(submitted_at, gw, job_ids)
        if len(done) == len(job_ids):
            return done
        await asyncio.sleep(0.01)
    raise RuntimeError(f"only {len(submitted_at(gw, job_ids))} of {len(job_ids)} jobs reached the site")


async def through_gateway(gw: StackGateway, count: int, concurrency: int, name: str) -> Phase:
    gate = asyncio.Semaphore(concurrency)
    starts: dict[str, float] = {}
    headers = gw.auth(ALICE)  # one token for the phase: minting it is the IdP's work, not the gateway's
    body = {"project": PROJECT, "name": "bench", "time_limit": 5, "site": "lumi", "partition": "small"}

    async def one() -> str:
        async with gate:
            started = time.time()
            reply = await gw.client.post(
                "/v1/jobs", json={**body, "cores": 1, "memory_gb": 2, "script": SCRIPT}, headers=headers
            )
            assert reply.status_code == 202, reply.text
            starts[reply.json()["id"]] = started
            return str(reply.json()["id"])

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


# --- the floor: one durable commit ------------------------------------------------------------------------


def commit_latency_ms(schema: str, seconds: int = 3) -> float:
    """pgbench, one client: the average latency of a submission-shaped write transaction (one row updated,
    one inserted, COMMIT with fsync) on the benchmark's PostgreSQL. Any gateway that reserves durably before
    it forwards adds at least this to a job's way to the site."""
    url = make_url(PG_SERVER)
    psql = ["psql", "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres"]
    psql += ["-d", url.database or "test", "-q", "-v", "ON_ERROR_STOP=1"]
    subprocess.run(
        [
            *psql,
            "-c",
            f"CREATE TABLE {schema}.floor_t(id int PRIMARY KEY, n bigint); "
            f"INSERT INTO {schema}.floor_t SELECT g, 0 FROM generate_series(1, 100) g; "
            f"CREATE TABLE {schema}.floor_e(id bigserial PRIMARY KEY, tid int);",
        ],
        check=True,
    )
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(
            "\\set id random(1, 100)\nBEGIN;\nUPDATE floor_t SET n = n + 1 WHERE id = :id;\n"
            "INSERT INTO floor_e(tid) VALUES (:id);\nCOMMIT;\n"
        )
        script.flush()
        out = subprocess.run(
            ["pgbench", "-n", *psql[1:7], "-c", "1", "-T", str(seconds), "-f", script.name, psql[8]],
            env={**os.environ, "PGOPTIONS": f"-c search_path={schema}"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    return float(re.search(r"latency average = ([0-9.]+) ms", out).group(1))  # type: ignore[union-attr]


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
    FORWARDER_PIDS.add(worker.pid)
    return worker


# --- the run -----------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> str:
    stack = start_stack()
    idp = LoopbackIdP().start()
    schema = new_pg_schema()
    lines: list[str] = []
    try:
        with tempfile.TemporaryDirectory() as tmp, ExitStack() as delays:
            sites = stack_sites(stack)
            url = str(stack.cluster("lumi").slurmrestd_url)
            if args.site_delay_ms:
                port = delays.enter_context(delayed(urlsplit(url).port or 80, args.site_delay_ms))
                url = f"http://127.0.0.1:{port}"
                sites["lumi"]["options"]["url"] = url  # the gateway and its forwarder process go through it too
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
                await direct(stack, url, 20, IN_FLIGHT, "warm-up")
                await through_gateway(gw, 20, IN_FLIGHT, "warm-up")

                async def phase(work: Any) -> Phase:
                    result = await measured(work)
                    clear_queue(stack, "lumi", "small")
                    return result

                delays.enter_context(partition_down(stack, "lumi", "small"))
                a = await phase(direct(stack, url, args.jobs, IN_FLIGHT, "(a) direct to slurmrestd, 8 in flight"))
                b = await phase(through_gateway(gw, args.jobs, IN_FLIGHT, "(b) through the gateway, 8 clients"))
                pa = await phase(direct(stack, url, 50, 1, "paced: direct"))
                pw = await phase(through_gateway(gw, 50, 1, "paced: gateway (its submit route wakes the forwarder)"))
                stop.set()
                await forwarding
                # The forwarder as a replica of its own (any number may run): a process beside the API's.
                worker = start_worker(stack, sites["lumi"], pg_schema_url(schema), tmp)
                try:
                    await through_gateway(gw, 20, IN_FLIGHT, "warm-up")  # the phase must not time its start-up
                    clear_queue(stack, "lumi", "small")
                    b2 = await phase(through_gateway(gw, args.jobs, IN_FLIGHT, "(b2) gateway, forwarder process"))
                    pw2 = await phase(through_gateway(gw, 50, 1, "paced: gateway, forwarder process (NOTIFY)"))
                finally:
                    worker.kill()
                    worker.join(30)
                phases = [a, b, b2, pa, pw, pw2]
                floor_ms = commit_latency_ms(schema)
                rpcs: dict[tuple[str, int], tuple[int, dict[str, int]]] = {}
                if not args.site_delay_ms:  # the RPC count does not depend on the distance
                    rpcs = await rpcs_by_active_jobs(gw, stack, args.active)

        cpu = (platform.processor() or platform.machine()) + f", {os.cpu_count()} cores"
        delay = f" --site-delay-ms {args.site_delay_ms:g}" if args.site_delay_ms else ""
        lines += [
            f"## Forwarding to a site {args.site_delay_ms:g} ms away (each way)" if delay else "## Forwarding",
            "",
            f"`uv run python tests/bench/bench_forwarding.py --jobs {args.jobs} --active {args.active}{delay}` "
            f"on {cpu}; Slurm {stack.slurm_version} (`lumi` cluster of tests/stack), PostgreSQL on the same "
            "machine, gateway API over ASGI in-process, one forwarder (8 deliveries in flight per site), "
            f"{time.strftime('%Y-%m-%d')}."
            + (" Both paths reach slurmrestd through tests/bench/delay.py." if delay else ""),
            "",
            "| phase | jobs | seconds | jobs/s | p50 ms | p95 ms | CPU ms/job (this process) | CPU ms/job (machine) |",
            "|---|---|---|---|---|---|---|---|",
            *(p.line() for p in phases),
            "",
            f"- throughput through the gateway / direct: **{b.rate / a.rate:.2f}×** in one process, "
            f"**{b2.rate / a.rate:.2f}×** with the forwarder in its own process (target ≥ 0.9×)",
            added(pa, pw, "paced, forwarder woken by the submit route", "target ≤ 10 %"),
            added(pa, pw2, "paced, forwarder process woken by PostgreSQL NOTIFY (polls every 0.5 s)", ""),
            f"- the floor, pgbench with one client in the same run: one durable commit of a submission-shaped "
            f"transaction takes **{floor_ms:.2f} ms** on average; 10 % of paced direct p50 is "
            f"{statistics.median(pa.latencies_ms) / 10:.2f} ms",
            "",
            *parts_table(phases),
        ]
        if rpcs:
            lines += rpc_table(rpcs)
    finally:
        idp.close()
        drop_pg_schema(schema)
    return "\n".join(lines)


async def rpcs_by_active_jobs(
    gw: StackGateway, stack: SlurmStack, active: int
) -> dict[tuple[str, int], tuple[int, dict[str, int]]]:
    stop = asyncio.Event()
    forwarding = asyncio.create_task(gw.rt.forwarder.run_forever(stop))
    rpcs: dict[tuple[str, int], tuple[int, dict[str, int]]] = {}
    for site in ("lumi", "lucia"):
        await hold_jobs(gw, site, 10)
        rpcs[(site, 10)] = await rpcs_per_cycle(gw, stack, site)
        await hold_jobs(gw, site, active - 10)
        rpcs[(site, active)] = await rpcs_per_cycle(gw, stack, site)
    stop.set()
    await forwarding
    for site in ("lumi", "lucia"):
        cancel_at_site(stack, gw, site)
    return rpcs


def parts_table(phases: list[Phase]) -> list[str]:
    """The machine's CPU per job by process, for each phase."""
    return [
        "The machine's CPU ms per job, by process (/proc/<pid>/stat; this process less the benchmark's own "
        "polling; the rest: MariaDB, slurmdbd, the kernel's threads and whatever else ran meanwhile):",
        "",
        "| phase | " + " | ".join(PARTS) + " |",
        "|---|" + "---:|" * len(PARTS),
        *(f"| {p.name} | " + " | ".join(f"{p.parts_ms.get(n, 0):.1f}" for n in PARTS) + " |" for p in phases),
        "",
    ]


def rpc_table(rpcs: dict[tuple[str, int], tuple[int, dict[str, int]]]) -> list[str]:
    return [
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--active", type=int, default=1000)
    parser.add_argument(
        "--site-delay-ms", type=float, default=0, help="put slurmrestd this far away (one way), for both paths"
    )
    parser.add_argument("--write-results", action="store_true", help=f"append the section to {RESULTS.name}")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    print(report)
    if args.write_results:
        with RESULTS.open("a") as results:
            results.write("\n" + report)


if __name__ == "__main__":
    main()

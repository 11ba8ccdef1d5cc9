"""Ledger reservation benchmark on PostgreSQL, beside the machine's own ceiling measured with pgbench.

Not a test (pytest does not collect ``bench_*.py``); run it by hand:

    uv run python tests/bench/bench_ledger.py [--seconds 15] [--write-results]

Scenarios, each with 64 concurrent clients (each its own connection): (a) one project, so every
reservation updates the same allocation row; (b) 100 projects, spread at random. Each client loops on
``Database.run(ledger.reserve)``: the gateway's real code path (a transaction with bounded retries, the
conditional update and its entry). The clients are Python threads spread over several processes.
Beside each, pgbench runs (1) the bare single-row conditional update on a table of the same shape and
(2) the ledger's own reservation statement, with the same number of clients on the same database.
pgbench is in Debian's ``postgresql-client`` package.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.dialects import postgresql

from gateway.db import Database, make_engine
from gateway.errors import DatabaseBusy, QuotaExceeded
from gateway.ledger import service as ledger
from gateway.migrations import migrate

SERVER = os.environ.get("ANTENNA_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
AT = T0 + timedelta(days=1)
RESULTS = Path(__file__).with_name("RESULTS.md")
T = TypeVar("T")


@dataclass
class Outcome:
    name: str
    count: int
    seconds: float
    latencies_ms: list[float]
    refused: int = 0
    busy: int = 0
    client_cpu_ms: float | None = None  # CPU of the gateway's client processes per reservation
    server_cpu_ms: float | None = None  # CPU of their PostgreSQL backends per reservation (local server only)

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def percentile(self, p: float) -> float:
        if len(self.latencies_ms) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(p) - 1]


# --- the gateway's clients ------------------------------------------------------------------------


def client_process(
    url: str, projects: int, threads: int, window: tuple[float, float], tag: str, ready: Any, go: Any, out: Any
) -> None:
    """``threads`` clients in one process, reserving in a loop; reports counts, latencies and CPU seconds.

    ``window`` is (warm-up seconds, measured seconds) after the common start ``go`` carries.
    """
    db = Database(make_engine(url, pool_size=threads))
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"ok": 0, "refused": 0, "busy": 0}
    connected = threading.Barrier(threads + 1)
    start = {"at": 0.0}

    def client(n: int) -> None:
        import random

        rng = random.Random(f"{tag}-{n}")
        mine: list[float] = []
        done = refused = busy = 0
        db.run(lambda s: ledger.balances(s, project="p0"))  # connect before the start
        connected.wait()
        connected.wait()  # released once the common start time is known
        measure_from = start["at"] + window[0]
        stop_at = measure_from + window[1]
        while time.time() < start["at"]:
            time.sleep(0.005)
        i = 0
        while (now := time.time()) < stop_at:
            i += 1
            project = "p0" if projects == 1 else f"p{rng.randrange(projects)}"
            job = f"{tag}-{n}-{i}"
            t = time.perf_counter()
            try:
                db.run(
                    lambda s, job=job, project=project: ledger.reserve(
                        s,
                        job_id=job,
                        project=project,
                        site="lumi",
                        unit="gpu-hours",
                        amount=Decimal(1),
                        person="bench",
                        at=AT,
                    )
                )
                ok = True
            except QuotaExceeded:
                ok, refused = False, refused + 1
            except DatabaseBusy:
                ok, busy = False, busy + 1
            elapsed = (time.perf_counter() - t) * 1000
            if now >= measure_from and ok:
                done += 1
                mine.append(elapsed)
        with lock:
            latencies.extend(mine)
            counts["ok"] += done
            counts["refused"] += refused
            counts["busy"] += busy

    pool = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    connected.wait()
    ready.put("ready")
    start["at"] = go.get()
    connected.wait()
    cpu = sleep_until(start["at"] + window[0], time.process_time)
    cpu = sleep_until(start["at"] + window[0] + window[1], time.process_time) - cpu
    for thread in pool:
        thread.join()
    db.dispose()
    out.put((counts, latencies, cpu))


def sleep_until(when: float, sample: Callable[[], T]) -> T:
    time.sleep(max(0.0, when - time.time()))
    return sample()


def backend_pids(url: str) -> list[int]:
    """PostgreSQL backends serving the gateway's clients (they connect with the schema as application name)."""
    engine = create_engine(SERVER)
    with engine.connect() as conn:
        pids = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"), {"name": app_name(url)}
        ).scalars()
        found = list(pids)
    engine.dispose()
    return found


def app_name(url: str) -> str:
    name = make_url(url).query.get("application_name", "")
    return name if isinstance(name, str) else name[0]


def backends_cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds used so far by each of these local server processes that /proc shows."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # not a local server, or the backend went away
        found[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return found


def run_gateway(url: str, *, projects: int, clients: int, processes: int, warmup: float, seconds: float) -> Outcome:
    ctx = multiprocessing.get_context("spawn")
    ready, out = ctx.Queue(), ctx.Queue()
    gos = [ctx.Queue() for _ in range(processes)]
    per = [clients // processes + (1 if k < clients % processes else 0) for k in range(processes)]
    tag = uuid.uuid4().hex[:6]
    procs = [
        ctx.Process(target=client_process, args=(url, projects, n, (warmup, seconds), f"{tag}{k}", ready, gos[k], out))
        for k, n in enumerate(per)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get()  # every client connected
    pids = backend_pids(url)
    begin = time.time() + 0.5
    for go in gos:
        go.put(begin)
    server_cpu = sleep_until(begin + warmup, lambda: backends_cpu(pids))
    server_end = sleep_until(begin + warmup + seconds, lambda: backends_cpu(pids))
    latencies: list[float] = []
    count = refused = busy = 0
    client_cpu = 0.0
    for _ in procs:
        counts, lats, cpu = out.get()
        count += counts["ok"]
        refused += counts["refused"]
        busy += counts["busy"]
        latencies.extend(lats)
        client_cpu += cpu
    for proc in procs:
        proc.join()
    name = (
        "gateway ledger.reserve, one project (hot row)"
        if projects == 1
        else f"gateway ledger.reserve, {projects} projects"
    )
    outcome = Outcome(name, count, seconds, latencies, refused, busy)
    outcome.client_cpu_ms = 1000 * client_cpu / max(count, 1)
    both = server_cpu.keys() & server_end.keys()
    if both:
        outcome.server_cpu_ms = 1000 * sum(server_end[p] - server_cpu[p] for p in both) / max(count, 1)
    return outcome


# --- pgbench --------------------------------------------------------------------------------------


def sql_literal(value: Any) -> str:
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def ledger_script(projects: int) -> str:
    """The ledger's own reservation statement as a pgbench script (job ids from a random variable)."""
    compiled = ledger._statements().reserve_all.compile(dialect=postgresql.dialect())
    params = dict(compiled.params)
    params.update(
        p_site="lumi",
        p_unit="gpu-hours",
        p_at=AT,
        p_micro=1_000_000,
        p_person="bench",
        p_actor="bench",
        p_epoch=ledger.EPOCH,
    )
    sql = str(compiled)
    # Job ids and projects are drawn by the server (a sequence, random()): no pgbench variables to type.
    job = "(SELECT id FROM bench_job)"
    sql = sql.replace("%(p_job_id)s", job).replace("%(p_key)s", f"('reserve:' || {job})")
    sql = sql.replace("%(p_project)s", "(SELECT project FROM bench_pick)" if projects > 1 else "'p0'")
    sql = re.sub(r"%\((\w+)\)s", lambda m: sql_literal(params[m.group(1)]), sql)
    pick = f"SELECT 'p' || floor(random() * {projects})::int AS project" if projects > 1 else "SELECT 'p0' AS project"
    return (
        "BEGIN;\n"
        + "WITH bench_job AS MATERIALIZED (SELECT 'pgb-' || nextval('bench_jobs') AS id), "
        + f"bench_pick AS MATERIALIZED ({pick}), "
        + " ".join(sql.split()).removeprefix("WITH ")
        + ";\nCOMMIT;\n"
    )


def bare_script(projects: int) -> str:
    """The bare single-row conditional update, the machine's ceiling for this pattern."""
    pick = "1" if projects == 1 else ":id"
    head = "" if projects == 1 else f"\\set id random(1, {projects})\n"
    return head + (
        f"UPDATE bench_ceiling SET reserved = reserved + 1 WHERE id = {pick} AND granted - reserved - charged >= 1;\n"
    )


def run_pgbench(url: str, schema: str, script: str, name: str, *, clients: int, seconds: float) -> Outcome:
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        sys.exit("pgbench is missing: apt-get install postgresql-client (Debian) and run again")
    parts = make_url(url)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "script.sql"
        path.write_text(script, encoding="utf-8")
        env = {**os.environ, "PGOPTIONS": f"-c search_path={schema}"}
        command = [
            pgbench,
            "-n",
            "-h",
            parts.host or "127.0.0.1",
            "-p",
            str(parts.port or 5432),
            "-U",
            parts.username or "postgres",
            "-M",
            "prepared",  # as the gateway's driver does after a few executions (psycopg prepare_threshold)
            "-c",
            str(clients),
            "-j",
            str(os.cpu_count() or 1),
            "-T",
            str(int(seconds)),
            "-l",
            "--log-prefix",
            str(Path(tmp) / "log"),
            "-f",
            str(path),
            parts.database or "postgres",
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"pgbench failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        latencies = [
            int(fields[2]) / 1000
            for log in Path(tmp).glob("log*")
            for fields in (line.split() for line in log.read_text().splitlines())
        ]
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    measured = float(tps.group(1)) * seconds if tps else float(len(latencies))
    return Outcome(name, round(measured), seconds, latencies)


# --- the run --------------------------------------------------------------------------------------


def machine(url: str) -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    engine = create_engine(url)
    with engine.connect() as conn:
        version = conn.execute(text("SHOW server_version")).scalar()
        sync = conn.execute(text("SHOW synchronous_commit")).scalar()
        fsync = conn.execute(text("SHOW fsync")).scalar()
    engine.dispose()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "postgresql": f"{version} (fsync={fsync}, synchronous_commit={sync}), on the same machine",
        "python": platform.python_version(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg())
        + " (1/5/15 min load average before the run: the machine is shared with other work)",
    }


def prepare(schema: str, projects: int) -> str:
    admin = create_engine(SERVER)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    admin.dispose()
    url = f"{SERVER}?options=-csearch_path%3D{schema}&application_name=antenna-bench-{schema[-10:]}"
    engine = make_engine(url)
    migrate(engine)
    db = Database(engine)
    for p in range(projects):
        db.run(
            lambda s, p=p: ledger.set_allocation(
                s,
                project=f"p{p}",
                site="lumi",
                unit="gpu-hours",
                amount=Decimal(10) ** 11,
                start=T0,
                end=T0 + timedelta(days=365),
                actor="bench",
                reason="benchmark budget",
                at=T0,
            )
        )
    with engine.begin() as conn:
        conn.execute(
            text("CREATE TABLE bench_ceiling (id int PRIMARY KEY, granted bigint, reserved bigint, charged bigint)")
        )
        conn.execute(
            text("INSERT INTO bench_ceiling SELECT g, 1000000000000, 0, 0 FROM generate_series(1, :n) g"),
            {"n": projects},
        )
        conn.execute(text("CREATE SEQUENCE bench_jobs"))
    engine.dispose()
    return url


def drop(schema: str) -> None:
    admin = create_engine(SERVER)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    admin.dispose()


def check(url: str) -> list[str]:
    db = Database(make_engine(url))
    problems = db.run(ledger.check_invariants)
    db.dispose()
    return problems


def merged(runs: list[Outcome]) -> Outcome:
    """Several rounds of one measurement: the median rate, the latencies of all rounds."""
    rate = statistics.median(o.rate for o in runs)
    client = [o.client_cpu_ms for o in runs if o.client_cpu_ms is not None]
    server = [o.server_cpu_ms for o in runs if o.server_cpu_ms is not None]
    return Outcome(
        runs[0].name,
        round(rate * runs[0].seconds),
        runs[0].seconds,
        [x for o in runs for x in o.latencies_ms],
        sum(o.refused for o in runs),
        sum(o.busy for o in runs),
        statistics.median(client) if client else None,
        statistics.median(server) if server else None,
    )


def cpu_note(gateway: Outcome) -> str:
    """The gateway's measured CPU cost per reservation, and what it implies for dedicated cores."""
    if gateway.client_cpu_ms is None or gateway.server_cpu_ms is None:
        return ""
    cores = os.cpu_count() or 1
    ceiling = cores * 1000 / (gateway.client_cpu_ms + gateway.server_cpu_ms)
    return (
        f"CPU per gateway reservation (medians): {gateway.client_cpu_ms:.2f} ms in the gateway's client "
        f"processes + {gateway.server_cpu_ms:.2f} ms in their PostgreSQL backends (WAL writer not counted); "
        f"{cores} cores doing nothing else could "
        f"therefore serve at most about {ceiling:,.0f} reservations/s (a projection from measured costs, "
        "not a measurement)."
    )


def table(rows: list[Outcome], rounds: list[list[Outcome]]) -> str:
    lines = [
        "| scenario | reservations/s (median) | each round | p50 ms | p99 ms |",
        "|---|---:|---|---:|---:|",
    ]
    for i, o in enumerate(rows):
        each = ", ".join(f"{r[i].rate:,.0f}" for r in rounds)
        lines.append(f"| {o.name} | {o.rate:,.0f} | {each} | {o.percentile(50):.1f} | {o.percentile(99):.1f} |")
    return "\n".join(lines)


def scenario(args: argparse.Namespace, projects: int) -> tuple[list[Outcome], list[list[Outcome]]]:
    """Every round measures the ceiling, the statement under pgbench and the gateway back to back."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    url = prepare(schema, projects)
    rounds: list[list[Outcome]] = []
    try:
        for _ in range(args.rounds):
            bare = run_pgbench(
                url,
                schema,
                bare_script(projects),
                "pgbench: bare conditional UPDATE of one row" + ("" if projects == 1 else f" of {projects}"),
                clients=args.clients,
                seconds=args.seconds,
            )
            statement = run_pgbench(
                url,
                schema,
                ledger_script(projects),
                "pgbench: the ledger's reservation (BEGIN; statement; COMMIT)",
                clients=args.clients,
                seconds=args.seconds,
            )
            gateway = run_gateway(
                url,
                projects=projects,
                clients=args.clients,
                processes=args.processes,
                warmup=args.warmup,
                seconds=args.seconds,
            )
            rounds.append([bare, statement, gateway])
        problems = check(url)
        if problems:
            sys.exit(f"ledger invariants broken after the benchmark: {problems[:3]}")
    finally:
        drop(schema)
    rows = [merged([r[i] for r in rounds]) for i in range(3)]
    return rows, rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--projects", type=int, default=100)
    parser.add_argument("--processes", type=int, default=8, help="client processes (threads split among them)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per scenario (medians are reported)")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--write-results", action="store_true", help=f"rewrite the Ledger section of {RESULTS.name}")
    args = parser.parse_args()
    info = machine(SERVER)
    results: dict[str, tuple[list[Outcome], list[list[Outcome]]]] = {}
    for label, projects in (("hot", 1), ("spread", args.projects)):
        results[label] = scenario(args, projects)
        rows, rounds = results[label]
        print(f"\n{label}:\n{table(rows, rounds)}\n{cpu_note(rows[2])}", flush=True)
        if rows[2].refused or rows[2].busy:
            print(f"  ({rows[2].refused} refused, {rows[2].busy} DatabaseBusy)")
    hot_ratio = statistics.median(r[2].rate / r[0].rate for r in results["hot"][1])
    spread_rate = results["spread"][0][2].rate
    verdict = (
        f"hot row: {hot_ratio:.2f} x pgbench's bare update (median of the rounds' ratios; target >= 0.5: "
        f"{'met' if hot_ratio >= 0.5 else 'MISSED'}); spread: {spread_rate:,.0f} reservations/s "
        f"(target >= 1,000: {'met' if spread_rate >= 1000 else 'MISSED'})"
    )
    print("\n" + verdict)
    if args.write_results:
        write_results(info, results, verdict, args)


def write_results(
    info: dict[str, str],
    results: dict[str, tuple[list[Outcome], list[list[Outcome]]]],
    verdict: str,
    args: argparse.Namespace,
) -> None:
    section = [
        "## Ledger",
        "",
        f"Measured {datetime.now(UTC).date().isoformat()} with "
        f"`uv run python tests/bench/bench_ledger.py --seconds {args.seconds:g} --rounds {args.rounds} "
        f"--processes {args.processes} --write-results` ({args.clients} clients; the gateway's clients are "
        f"{args.processes} processes of threads, one connection each; {args.rounds} rounds per scenario, each "
        "running the three measurements back to back, medians reported).",
        "",
        *(f"- {key}: {value}" for key, value in info.items()),
        "",
        f"### (a) {args.clients} clients, one project (one hot row)",
        "",
        table(results["hot"][0], results["hot"][1]),
        "",
        cpu_note(results["hot"][0][2]),
        "",
        f"### (b) {args.clients} clients spread over {args.projects} projects",
        "",
        table(results["spread"][0], results["spread"][1]),
        "",
        cpu_note(results["spread"][0][2]),
        "",
        f"**Verdict:** {verdict}.",
        "",
        "<!-- analysis: kept by hand below this line -->",
    ]
    old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    match = re.search(r"^## Ledger\n.*?(?=^## |\Z)", old, flags=re.S | re.M)
    analysis = ""
    if match:
        kept = match.group(0).split("<!-- analysis: kept by hand below this line -->", 1)
        analysis = kept[1] if len(kept) == 2 else ""
    new_section = "\n".join(section) + (analysis if analysis else "\n\n")
    updated = (
        old[: match.start()] + new_section + old[match.end() :] if match else old.rstrip("\n") + "\n\n" + new_section
    )
    RESULTS.write_text(updated, encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

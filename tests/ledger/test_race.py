"""Overspend race: a budget for exactly N jobs, 20 x N reservations at once from two OS processes.

Each process is a separate Python interpreter with its own engine (as two gateway replicas are), on the
same PostgreSQL schema or the same SQLite file; each fires from several threads after a common start
signal. Exactly N reservations must succeed, the rest must be refused with QuotaExceeded (on SQLite,
lock contention past the bounded retries may surface as DatabaseBusy, never as "database is locked"),
and a monitor in the parent, reading balances during the race, must never see a negative availability.
"""

from __future__ import annotations

import threading
from collections import Counter
from decimal import Decimal

from gateway.db import Database, make_engine
from gateway.ledger import service as ledger
from tests.ledger import workers
from tests.ledger.conftest import Ledger

N = 10
PRICE = "3.5"
PROCESSES = 2
THREADS = 8


def run_race(url: str) -> tuple[Counter[str], list[Decimal]]:
    db = Database(make_engine(url))
    book = Ledger(db)
    book.allocate(Decimal(PRICE) * N, start=workers.T0)
    ctx = workers.context()
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    jobs = [f"job-{i}" for i in range(20 * N)]
    procs = [
        ctx.Process(target=workers.race, args=(url, jobs[k::PROCESSES], PRICE, THREADS, ready, go, results))
        for k in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=120)
    seen: list[Decimal] = []
    stop = threading.Event()

    def monitor() -> None:
        while not stop.wait(0.002):  # pacing only: the monitor must not starve the two processes
            seen.append(book.balance().available)

    watcher = threading.Thread(target=monitor)
    watcher.start()
    go.set()
    counts: Counter[str] = Counter()
    errors: list[str] = []
    for _ in procs:
        got, errs = results.get(timeout=120)
        counts.update(got)
        errors.extend(errs)
    stop.set()
    watcher.join()
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    assert errors == []
    bal = book.balance()
    assert (bal.reserved, bal.available) == (Decimal(PRICE) * N, 0)
    assert book.problems() == []
    assert sorted(db.run(ledger.open_reservations)) == sorted(
        db.run(lambda s: [j for j in jobs if ledger.reservation_of(s, j) is not None])
    )
    db.dispose()
    return counts, seen


def test_no_overspend_from_two_processes_on_postgresql(pg_url: str) -> None:
    counts, seen = run_race(pg_url)
    assert counts == Counter({"reserved": N, "quota": 19 * N})
    assert seen
    assert min(seen) >= 0


def test_no_overspend_from_two_processes_on_sqlite(sqlite_db: Database) -> None:
    url = sqlite_db.engine.url.render_as_string(hide_password=False)
    counts, seen = run_race(url)
    print(f"SQLite race: {dict(counts)} (DatabaseBusy surfaced {counts['busy']} times)")
    assert counts["reserved"] == N
    assert counts["quota"] + counts["busy"] == 19 * N
    assert set(counts) <= {"reserved", "quota", "busy"}
    assert seen
    assert min(seen) >= 0

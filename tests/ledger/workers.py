"""Code that runs in child processes (the "other gateway instances") of the race and crash tests.

Each child builds its own engine from a URL, exactly as a gateway replica does; nothing is shared with
the parent but the database. Children are started from a fork server that has imported this module.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from multiprocessing.context import BaseContext
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from typing import Any

from gateway.db import Database, make_engine
from gateway.errors import DatabaseBusy, QuotaExceeded
from gateway.ledger import service as ledger

T0 = datetime(2026, 3, 1, tzinfo=UTC)
AT = T0 + timedelta(hours=1)


def context() -> BaseContext:
    """Processes forked from a server that already imported the gateway: real processes, started fast."""
    ctx = multiprocessing.get_context("forkserver")
    # "__main__" too: otherwise every child re-imports the main script (pytest itself) before running;
    # the drivers too: the engine imports them lazily, at the first connection.
    ctx.set_forkserver_preload(
        [
            "__main__",
            "tests.ledger.workers",
            "psycopg",
            "sqlalchemy.dialects.postgresql.psycopg",
            "sqlalchemy.dialects.sqlite.pysqlite",
        ]
    )
    return ctx


# --- overspend race -------------------------------------------------------------------------------


def race(url: str, jobs: list[str], price: str, threads: int, ready: Any, go: Event, results: Any) -> None:
    """Reserve every job of ``jobs`` from ``threads`` threads, all released by ``go`` at once."""
    db = Database(make_engine(url, pool_size=threads))
    db.run(lambda s: ledger.balances(s, project="p"))  # connect before the start signal
    counts: Counter[str] = Counter()
    errors: list[str] = []
    lock = threading.Lock()

    def worker(mine: list[str]) -> None:
        go.wait()
        for job in mine:
            try:
                db.run(
                    lambda s, job=job: ledger.reserve(
                        s,
                        job_id=job,
                        project="p",
                        site="lumi",
                        unit="gpu-hours",
                        amount=Decimal(price),
                        person="alice",
                        at=AT,
                    )
                )
                outcome = "reserved"
            except QuotaExceeded:
                outcome = "quota"
            except DatabaseBusy:
                outcome = "busy"
            except Exception as exc:  # reported to the parent, which fails the test with it
                outcome = "error"
                with lock:
                    errors.append(repr(exc))
            with lock:
                counts[outcome] += 1

    pool = [threading.Thread(target=worker, args=(jobs[i::threads],)) for i in range(threads)]
    for thread in pool:
        thread.start()
    ready.put("ready")
    for thread in pool:
        thread.join()
    db.dispose()
    results.put((dict(counts), errors))


# --- crash safety ---------------------------------------------------------------------------------

OUTSIDE, INSIDE = 0, 1


def reserve_and_settle_forever(url: str, name: str, seed: int, phase: Synchronized, committed: Any) -> None:
    """Loop until killed: each transaction reserves a new job and settles an older one.

    ``phase`` is INSIDE between the reservation and the commit, so the parent can kill the process
    while a transaction is half done. After each commit the job ids are sent to the parent.
    Jobs left open by an earlier (killed) child are settled first: that is the restart.
    """
    rng = random.Random(seed)
    db = Database(make_engine(url, pool_size=1))
    leftover = list(db.run(ledger.open_reservations))
    i = 0
    while True:
        i += 1
        job = f"{name}-{i}"
        older = leftover.pop() if leftover else None
        charge = Decimal(rng.randint(0, 3000)) / 1000  # reservations are 2: some charges overrun

        def work(session: Any, job: str = job, older: str | None = older, charge: Decimal = charge) -> None:
            ledger.reserve(
                session,
                job_id=job,
                project="p",
                site="lumi",
                unit="gpu-hours",
                amount=Decimal(2),
                person="alice",
                at=AT,
            )
            phase.value = INSIDE
            if older is not None:
                outcome = rng.choice(["charge", "charge", "release", "void"])
                ledger.settle(session, job_id=older, outcome=outcome, amount=charge, at=AT + timedelta(hours=1))

        db.run(work)
        phase.value = OUTSIDE
        committed.send((job, older))
        if rng.random() < 0.7:
            leftover.append(job)

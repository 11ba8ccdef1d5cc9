"""Crash safety: a gateway process killed with SIGKILL in the middle of reservations and charges, many times.

Each round starts a child process (its own engine) that first settles what earlier, killed children left
open (the restart), then loops: one transaction reserves a new job and settles an older one. The parent
kills it with SIGKILL either while a transaction is half done (after the reservation, before the commit)
or after a random delay. After every kill: ``check_invariants`` is empty (every open reservation is in
``reserved``, every reservation has exactly its entries, nothing half-written), and everything the child
had acknowledged as committed is there.
"""

from __future__ import annotations

import os
import random
import signal
import time
from multiprocessing.connection import Connection

from sqlalchemy.orm import Session

from gateway.db import Database, make_engine
from gateway.ledger import service as ledger
from tests.ledger import workers
from tests.ledger.conftest import Ledger


def acknowledged(pipe: Connection) -> list[tuple[str, str | None]]:
    got = []
    try:
        while pipe.poll():
            got.append(pipe.recv())
    except EOFError:
        pass
    return got


def run_kills(url: str, *, kills: int, seed: int) -> None:
    print(f"crash test seed {seed}")
    rng = random.Random(seed)
    db = Database(make_engine(url))
    book = Ledger(db)
    book.allocate(1_000_000, start=workers.T0)
    ctx = workers.context()
    reserved: set[str] = set()
    settled: set[str] = set()
    mid_transaction = 0
    for round_ in range(kills):
        phase = ctx.Value("i", workers.OUTSIDE, lock=False)
        receiver, sender = ctx.Pipe(duplex=False)
        child = ctx.Process(
            target=workers.reserve_and_settle_forever,
            args=(url, f"c{round_}", rng.randrange(2**32), phase, sender),
        )
        child.start()
        sender.close()
        assert receiver.poll(120), "the child never committed a transaction"
        if round_ % 2 == 0:
            while phase.value != workers.INSIDE and child.is_alive():
                time.sleep(0)  # kill while a transaction is between its reservation and its commit
        else:
            time.sleep(rng.uniform(0, 0.2))
        inside = phase.value == workers.INSIDE
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL
        mid_transaction += inside
        for job, older in acknowledged(receiver):
            reserved.add(job)
            if older is not None:
                settled.add(older)
        receiver.close()
        assert book.problems() == [], f"after kill {round_}"

        def durable(s: Session) -> tuple[set[str], set[str]]:
            missing = {j for j in reserved if ledger.reservation_of(s, j) is None}
            reopened = {j for j in settled if (r := ledger.reservation_of(s, j)) is None or r.state == "pending"}
            return missing, reopened

        assert db.run(durable) == (set(), set()), f"acknowledged work lost after kill {round_}"
    print(f"{kills} kills, {mid_transaction} while a transaction was open; {len(reserved)} jobs acknowledged")
    for job in db.run(ledger.open_reservations):  # the last restart: settle what is left
        book.settle(job, "release")
    bal = book.balance()
    assert bal.reserved == 0
    assert bal.granted == bal.available + bal.charged
    assert book.problems() == []
    db.dispose()


def test_kill_9_during_reservations_and_charges_on_postgresql(pg_url: str) -> None:
    run_kills(pg_url, kills=20, seed=random.SystemRandom().randrange(2**32))


def test_kill_9_during_reservations_and_charges_on_sqlite(sqlite_db: Database) -> None:
    run_kills(
        sqlite_db.engine.url.render_as_string(hide_password=False),
        kills=10,
        seed=random.SystemRandom().randrange(2**32),
    )

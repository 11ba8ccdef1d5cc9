"""Seeded simulation of the ledger (TigerBeetle-style): random operations, an independent model, every step checked.

Operations: submit (reserve), duplicate submit, start, finish with actual usage (including overruns and
finish reports for jobs never seen starting), cancel before start (void), site rejection (void), duplicate
and out-of-order settlement reports, allocation changes up and down (shrinks below what is committed are
refused), top-ups, shortening / extending a period, period roll-over to a new period, and simulated
crashes (a transaction that dies after its ledger writes, before the commit: everything rolls back).
After EVERY step: ``check_invariants`` is empty and every balance equals the model's prediction.

Replay a failure with ``ANTENNA_SIM_SEED=<seed>`` (the seed is in the test id and in the failure
note); ``ANTENNA_SIM_STEPS`` runs longer. Killing a real process mid-transaction is test_crash.py's job.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.orm import Session

from gateway.billing import from_micro
from gateway.db import Database
from gateway.errors import AntennaError, Conflict, InvalidRequest, NoActiveAllocation, NotFound, QuotaExceeded
from gateway.ledger import service as ledger
from tests.ledger.conftest import SITE, T0, UNIT
from tests.ledger.model import Model

PROJECTS = ("p1", "p2", "p3")
PERIOD = timedelta(days=30)
STEPS = int(os.environ.get("ANTENNA_SIM_STEPS", "600"))
MICRO = 1_000_000


def seeds() -> list[int]:
    chosen = os.environ.get("ANTENNA_SIM_SEED")
    if chosen:
        return [int(chosen)]
    return [1, 2, 3, random.SystemRandom().randrange(2**32)]  # the last one differs per run: see the test id


class Crash(Exception):
    """The process 'dies' after its ledger writes and before the commit."""


OUTCOMES: dict[type[AntennaError], str] = {
    QuotaExceeded: "quota",
    NoActiveAllocation: "no-allocation",
    Conflict: "conflict",
    InvalidRequest: "invalid",
    NotFound: "not-found",
}


class Simulation:
    def __init__(self, db: Database, seed: int, steps: int) -> None:
        self.db = db
        self.seed = seed
        self.steps = steps
        self.rng = random.Random(seed)
        self.model = Model()
        self.now = T0
        self.step = 0
        self.trace: list[str] = []
        self.queued: list[str] = []  # reserved, not started at the site
        self.running: list[str] = []
        self.ended: list[str] = []
        self.next_job = 0

    # --- plumbing ---------------------------------------------------------------------------------

    def call(self, work: Callable[[Session], Any]) -> tuple[str, Any]:
        try:
            return "ok", self.db.run(work)
        except AntennaError as exc:
            for kind, name in OUTCOMES.items():
                if isinstance(exc, kind):
                    return name, exc
            raise

    def expect(self, what: str, predicted: str, actual: str) -> None:
        self.trace.append(f"{self.step}: {what} -> {actual}")
        assert actual == predicted, f"{what}: the model predicted {predicted}, the ledger answered {actual}"

    def amount(self, low: int, high: int) -> int:
        return self.rng.randint(low * MICRO, high * MICRO)

    # --- operations -------------------------------------------------------------------------------

    def allocate(self, project: str, amount: int, start: datetime, end: datetime, label: str) -> None:
        predicted = self.model.allocate(project, amount, start, end, self.now) if start < end else "invalid"
        actual, _ = self.call(
            lambda s: ledger.set_allocation(
                s,
                project=project,
                site=SITE,
                unit=UNIT,
                amount=from_micro(amount),
                start=start,
                end=end,
                actor="quota-admin",
                reason=label,
                at=self.now,
            )
        )
        self.expect(f"{label} {project} {from_micro(amount)} [{start}, {end})", predicted, actual)

    def submit(self) -> None:
        project = self.rng.choice(PROJECTS)
        job, self.next_job = f"j{self.next_job}", self.next_job + 1
        amount = self.amount(1, 25)
        predicted = self.model.reserve(job, project, amount, self.now)
        actual, result = self.call(lambda s: self._reserve(s, job, project, amount))
        self.expect(f"reserve {job} {project} {from_micro(amount)}", predicted, actual)
        if actual == "ok":
            assert result.amount == from_micro(amount)
            assert not result.replayed
            self.queued.append(job)

    def _reserve(self, s: Session, job: str, project: str, amount: int) -> ledger.ReservationResult:
        return ledger.reserve(
            s, job_id=job, project=project, site=SITE, unit=UNIT, amount=from_micro(amount), person="alice", at=self.now
        )

    def resubmit(self) -> None:
        if not self.model.jobs:
            return
        job = self.rng.choice(sorted(self.model.jobs))
        known = self.model.jobs[job]
        actual, result = self.call(lambda s: self._reserve(s, job, known.project, known.amount))
        self.expect(f"reserve again {job}", "ok", actual)
        assert result.replayed
        assert result.amount == from_micro(known.amount)

    def start(self) -> None:
        if self.queued:
            job = self.queued.pop(self.rng.randrange(len(self.queued)))
            self.model.jobs[job].started = True
            self.running.append(job)
            self.trace.append(f"{self.step}: start {job}")

    def settle(self, job: str, outcome: ledger.Outcome, actual_use: int, what: str) -> None:
        predicted = self.model.settle(job, outcome, actual_use, self.now)
        actual, result = self.call(
            lambda s: ledger.settle(s, job_id=job, outcome=outcome, amount=from_micro(actual_use), at=self.now)
        )
        if actual == "ok" and result.replayed:
            actual = "replayed"
        self.expect(f"{what} {job} {outcome} {from_micro(actual_use)}", predicted, actual)
        if result is not None and not isinstance(result, AntennaError):
            known = self.model.jobs[job]
            assert (result.state.value, result.charged, result.overrun, result.reserved) == (
                known.state,
                from_micro(known.charged),
                from_micro(known.overrun),
                from_micro(known.amount),
            )

    def finish(self) -> None:
        pool = self.running if self.running and self.rng.random() < 0.85 else self.queued  # a lost start report
        if not pool:
            return
        job = pool.pop(self.rng.randrange(len(pool)))
        reserved = self.model.jobs[job].amount
        use = self.rng.choice([reserved, reserved * self.rng.randint(0, 100) // 100, reserved + self.amount(0, 3)])
        self.settle(job, "charge", use, "finish")
        self.ended.append(job)

    def cancel_or_reject(self) -> None:
        if self.queued:
            job = self.queued.pop(self.rng.randrange(len(self.queued)))
            self.settle(job, "void", 0, self.rng.choice(["cancel before start", "site rejects"]))
            self.ended.append(job)

    def late_report(self) -> None:
        """A duplicate or out-of-order report for a job that has already ended."""
        if self.ended:
            job = self.rng.choice(self.ended)
            outcome = self.rng.choice(["charge", "release", "void"])
            self.settle(job, outcome, self.amount(0, 30), "late report")
        else:
            self.settle("never-reserved", "charge", MICRO, "report for an unknown job")

    def change_grant(self) -> None:
        project = self.rng.choice(PROJECTS)
        period = self.model.periods[project][-1]
        amount = max(0, period.granted + self.rng.randint(-150 * MICRO, 100 * MICRO))
        self.allocate(project, amount, period.start, period.end, "change grant")

    def top_up(self) -> None:
        project = self.rng.choice(PROJECTS)
        delta = self.rng.randint(-60 * MICRO, 80 * MICRO)
        predicted = self.model.top_up(project, delta, self.now)
        actual, _ = self.call(
            lambda s: ledger.top_up(
                s,
                project=project,
                site=SITE,
                unit=UNIT,
                amount=from_micro(delta),
                actor="quota-admin",
                reason="top-up",
                at=self.now,
            )
        )
        self.expect(f"top up {project} {from_micro(delta)}", predicted, actual)

    def move_end(self) -> None:
        project = self.rng.choice(PROJECTS)
        period = self.model.periods[project][-1]
        end = self.rng.choice(  # end it now, move it into the past (refused if entries are later), or extend
            [self.now, self.now - timedelta(seconds=self.rng.randint(1, 2 * 86400)), self.now + PERIOD / 2]
        )
        self.allocate(project, period.granted, period.start, end, "move end")

    def roll_over(self) -> None:
        project = self.rng.choice(PROJECTS)
        last = self.model.periods[project][-1]
        self.now = max(self.now, last.end) + timedelta(seconds=self.rng.randint(0, 3600))
        self.allocate(project, self.amount(100, 300), last.end, max(last.end, self.now) + PERIOD, "new period")
        if self.rng.random() < 0.3:  # an overlapping period is refused
            self.allocate(project, MICRO, last.end - timedelta(days=1), last.end + PERIOD, "overlapping period")

    def crash(self) -> None:
        """A transaction dies after its ledger writes: nothing it wrote may remain."""
        kind = self.rng.choice(["reserve", "settle", "grant"])
        project = self.rng.choice(PROJECTS)

        def work(s: Session) -> None:
            if kind == "reserve":
                self._reserve(s, f"crashed-{self.step}", project, self.amount(1, 5))
            elif kind == "settle" and self.queued:
                ledger.settle(s, job_id=self.queued[0], outcome="charge", amount=Decimal(1), at=self.now)
            else:
                period = self.model.periods[project][-1]
                ledger.set_allocation(
                    s,
                    project=project,
                    site=SITE,
                    unit=UNIT,
                    amount=from_micro(period.granted + 10 * MICRO),
                    start=period.start,
                    end=period.end,
                    actor="quota-admin",
                    reason="crash",
                    at=self.now,
                )
            raise Crash

        try:
            self.call(work)
        except Crash:
            self.trace.append(f"{self.step}: crash during {kind}")
        else:
            self.trace.append(f"{self.step}: {kind} refused before the crash point")

    # --- the loop ---------------------------------------------------------------------------------

    def check(self) -> None:
        problems, balances = self.db.run(lambda s: (ledger.check_invariants(s), ledger.all_balances(s)))
        assert problems == [], problems
        actual = {
            (b.project, b.period_start): (b.period_end, b.granted, b.reserved, b.charged, b.overrun) for b in balances
        }
        predicted = {
            (p.project, p.start): (
                p.end,
                from_micro(p.granted),
                from_micro(p.reserved),
                from_micro(p.charged),
                from_micro(p.overrun),
            )
            for periods in self.model.periods.values()
            for p in periods
        }
        assert actual == predicted
        for b in balances:
            assert b.available >= 0  # reserved + charged never exceed the grant

    def run(self) -> None:
        for project in PROJECTS:
            self.allocate(project, self.amount(100, 300), T0, T0 + PERIOD, "grant")
        operations: list[tuple[Callable[[], None], int]] = [
            (self.submit, 30),
            (self.resubmit, 3),
            (self.start, 12),
            (self.finish, 20),
            (self.cancel_or_reject, 8),
            (self.late_report, 8),
            (self.change_grant, 5),
            (self.top_up, 4),
            (self.move_end, 3),
            (self.roll_over, 2),
            (self.crash, 5),
        ]
        actions, weights = zip(*operations, strict=True)
        for step in range(self.steps):
            self.step = step
            self.now += timedelta(seconds=self.rng.randint(0, 900))
            self.rng.choices(actions, weights)[0]()
            self.check()


def simulate(db: Database, seed: int, steps: int) -> None:
    print(f"ledger simulation seed {seed} ({steps} steps)")
    sim = Simulation(db, seed, steps)
    try:
        sim.run()
    except Exception as exc:
        exc.add_note(
            f"simulation seed {seed} failed at step {sim.step}; replay with "
            f"ANTENNA_SIM_SEED={seed} uv run pytest tests/ledger/test_simulation.py\n"
            "last operations:\n  " + "\n  ".join(sim.trace[-15:])
        )
        raise
    # The run reserved jobs, not only refusals. Over 41 seeds (600 steps) the count ranged from 47 to 144; a bound
    # of steps // 10 failed seed 3701720805 (47 jobs, every invariant held) in CI, so it stays well below that.
    assert len(sim.model.jobs) > steps // 20


@pytest.mark.parametrize("seed", seeds())
def test_simulation_on_sqlite(sqlite_db: Database, seed: int) -> None:
    simulate(sqlite_db, seed, STEPS)


def test_simulation_on_postgresql(pg_db: Database) -> None:
    simulate(pg_db, seeds()[0], STEPS)

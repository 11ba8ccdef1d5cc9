"""An independent, deliberately simple in-memory model of the quota ledger, for the seeded simulation.

It knows nothing of entries, layers or SQL: per allocation period it keeps four integers (micro-units)
and per job one record, and predicts the outcome of every ledger operation from the rules of the issue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

LAST_INSTANT = timedelta(microseconds=1)


@dataclass
class Period:
    project: str
    start: datetime
    end: datetime
    granted: int = 0
    reserved: int = 0
    charged: int = 0
    overrun: int = 0
    last_entry: datetime | None = None

    @property
    def available(self) -> int:
        return self.granted - self.reserved - self.charged

    def date(self, at: datetime) -> datetime:
        """Where an entry made at ``at`` is dated: inside the period."""
        return max(self.start, min(at, self.end - LAST_INSTANT))

    def touch(self, at: datetime) -> None:
        dated = self.date(at)
        self.last_entry = dated if self.last_entry is None else max(self.last_entry, dated)


@dataclass
class Job:
    project: str
    period: Period
    amount: int
    state: str = "pending"  # pending | charged | released | voided
    charged: int = 0
    overrun: int = 0
    started: bool = False


@dataclass
class Model:
    periods: dict[str, list[Period]] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)

    def active(self, project: str, at: datetime) -> Period | None:
        for period in self.periods.get(project, []):
            if period.start <= at < period.end:
                return period
        return None

    def period(self, project: str, start: datetime) -> Period | None:
        for period in self.periods.get(project, []):
            if period.start == start:
                return period
        return None

    # --- predictions: each returns the expected outcome name and applies it when it succeeds ------

    def allocate(self, project: str, amount: int, start: datetime, end: datetime, at: datetime) -> str:
        period = self.period(project, start)
        others = [p for p in self.periods.get(project, []) if p is not period]
        if any(p.start < end and p.end > start for p in others):
            return "conflict"
        if period is None:
            if end <= at:
                return "invalid"
            period = Period(project, start, end)
            self.periods.setdefault(project, []).append(period)
            self.periods[project].sort(key=lambda p: p.start)
        elif end != period.end and period.last_entry is not None and end <= period.last_entry:
            return "conflict"
        if amount < period.reserved + period.charged:  # (a new period has nothing committed)
            return "conflict"
        period.end = end
        if amount != period.granted:
            period.granted = amount
            period.touch(at)
        return "ok"

    def top_up(self, project: str, delta: int, at: datetime) -> str:
        period = self.active(project, at)
        if period is None:
            return "no-allocation"
        if delta < 0 and period.available < -delta:
            return "conflict"
        if delta:
            period.granted += delta
            period.touch(at)
        return "ok"

    def reserve(self, job_id: str, project: str, amount: int, at: datetime) -> str:
        if job_id in self.jobs:
            return "replayed"
        period = self.active(project, at)
        if period is None:
            return "no-allocation"
        if period.available < amount:
            return "quota"
        period.reserved += amount
        period.touch(at)
        self.jobs[job_id] = Job(project, period, amount)
        return "ok"

    def settle(self, job_id: str, outcome: str, actual: int, at: datetime) -> str:
        job = self.jobs.get(job_id)
        if job is None:
            return "not-found"
        if job.state != "pending":
            return "replayed"
        charged = min(actual, job.amount) if outcome == "charge" else 0
        job.charged = charged
        job.overrun = actual - charged if outcome == "charge" else 0
        job.state = {"charge": "charged", "release": "released", "void": "voided"}[outcome]
        job.period.reserved -= job.amount
        job.period.charged += charged
        job.period.overrun += job.overrun
        job.period.touch(at)
        return "ok"

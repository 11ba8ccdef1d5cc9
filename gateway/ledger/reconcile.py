"""Reconciliation: the ledger's charges at one site compared with the site's own accounting records.

A pure comparison: the ledger's usage lines (or a session to read them from) and the site's finished-job
records go in, a list of differences and per-period totals come out; nothing is written. Each site record
is priced with the partition's own formula (elapsed x allocated resources), exactly as the charge was.
Grants are never an input: what a site reports as a limit (for example a GrpTRESMins the gateway pushed)
is not a grant and is never read back as one; the ledger's grants stay the only source of allocations.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy.orm import Session

from gateway.billing import BillingFormula, price
from gateway.connectors.base import UsageRecord
from gateway.ledger import service

#: Default per-job tolerance, in the site's unit: sites round elapsed time and amounts their own way.
DEFAULT_TOLERANCE = Decimal("0.01")


class DifferenceKind(StrEnum):
    MISSING_AT_SITE = "missing-at-site"  # the ledger charged a job the site's accounting does not know
    MISSING_IN_LEDGER = "missing-in-ledger"  # the site booked usage the ledger never charged
    AMOUNT_DIFFERS = "amount-differs"  # both know the job; the amounts differ beyond the tolerance
    UNIT_DIFFERS = "unit-differs"  # both know the job but price it in different units
    UNKNOWN_PARTITION = "unknown-partition"  # a site record on a partition the configuration does not price
    UNKNOWN_ACCOUNT = "unknown-account"  # a job stamped by the gateway, booked to an account mapped to no project


@dataclass(frozen=True)
class Difference:
    kind: DifferenceKind
    site: str
    project: str | None
    unit: str | None
    period_start: datetime | None
    job_id: str | None
    site_job_ids: tuple[str, ...]
    ledger_amount: Decimal
    site_amount: Decimal

    @property
    def delta(self) -> Decimal:
        """Site minus ledger: positive when the site booked more than the ledger charged."""
        return self.site_amount - self.ledger_amount


@dataclass(frozen=True)
class PeriodTotal:
    project: str
    site: str
    unit: str
    period_start: datetime | None
    ledger_amount: Decimal
    site_amount: Decimal

    @property
    def delta(self) -> Decimal:
        return self.site_amount - self.ledger_amount


@dataclass(frozen=True)
class Reconciliation:
    site: str
    differences: list[Difference]
    totals: list[PeriodTotal]
    jobs_matched: int
    not_yet_at_site: list[str] = field(default_factory=list)  # recent ledger charges the site may book later
    ignored_records: int = 0  # site records of accounts outside the gateway, not stamped by it

    @property
    def ok(self) -> bool:
        return not self.differences

    def counts(self) -> dict[DifferenceKind, int]:
        """Differences per kind, every kind present (zero included), for a metric."""
        found = dict.fromkeys(DifferenceKind, 0)
        for diff in self.differences:
            found[diff.kind] += 1
        return found

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {kind.value}" for kind, n in self.counts().items() if n) or "no differences"
        worst = sorted(self.totals, key=lambda t: abs(t.delta), reverse=True)[:3]
        periods = "; ".join(
            f"{t.project}/{t.unit} {t.period_start.date() if t.period_start else '?'}: ledger {t.ledger_amount}, "
            f"site {t.site_amount}"
            for t in worst
            if t.delta
        )
        text = f"{self.site}: {self.jobs_matched} jobs matched, {kinds}"
        if self.not_yet_at_site:
            text += f", {len(self.not_yet_at_site)} recent charges not yet booked by the site"
        if self.ignored_records:
            text += f", {self.ignored_records} records of other accounts ignored"
        return f"{text}{'; largest period differences: ' + periods if periods else ''}"


@dataclass
class _Job:
    project: str | None = None
    unit: str | None = None
    period_start: datetime | None = None
    ledger: Decimal = Decimal(0)
    site: Decimal = Decimal(0)
    site_units: set[str] = field(default_factory=set)
    site_job_ids: list[str] = field(default_factory=list)
    in_ledger: bool = False
    at_site: bool = False
    last_charge: datetime | None = None


def reconcile(
    *,
    site: str,
    ledger_lines: Iterable[service.UsageLine],
    site_records: Iterable[UsageRecord],
    projects_by_account: Mapping[str, str],
    formulas: Mapping[str, BillingFormula],
    periods: Sequence[service.Balance] = (),
    tolerance: Decimal = DEFAULT_TOLERANCE,
    site_books_after: datetime | None = None,
) -> Reconciliation:
    """Compare what the ledger charged at ``site`` with what the site's accounting booked.

    ``ledger_lines``: the ledger's charge and overrun lines at this site (``service.usage``), for the same
    window as ``site_records``. ``projects_by_account``: the site's project account (Slurm account) to the
    gateway's project. ``formulas``: the site's partitions' billing formulas. ``periods``: the ledger's
    allocation periods, to place site-only records in a period. ``site_books_after``: ledger charges dated
    at or after this instant are not yet expected at the site (JSC books once a day); they are listed in
    ``not_yet_at_site`` instead of being reported as missing.
    """
    jobs: dict[str, _Job] = defaultdict(_Job)
    for line in ledger_lines:
        if line.site == site:
            _add_ledger_line(jobs, line)
    differences: list[Difference] = []
    ignored = 0
    for record in site_records:
        project = projects_by_account.get(record.project_account)
        formula = formulas.get(record.partition)
        if project is None and record.job_id is None:
            ignored += 1
        elif project is None or formula is None:
            kind = DifferenceKind.UNKNOWN_ACCOUNT if project is None else DifferenceKind.UNKNOWN_PARTITION
            differences.append(_difference(kind, site, project, record))
        else:
            job = jobs[record.job_id or f"site:{record.site_job_id}"]
            job.at_site = True
            job.site += price(formula, record.allocated, record.elapsed_seconds)
            job.site_units.add(formula.unit)
            job.site_job_ids.append(record.site_job_id)
            if not job.in_ledger:
                job.project, job.unit = project, formula.unit
                job.period_start = _period_of(periods, project, site, formula.unit, record.ended_at)
    matched = 0
    not_yet: list[str] = []
    totals: dict[tuple[str, str, datetime | None], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for key, job in sorted(jobs.items()):
        if job.project is not None and job.unit is not None:
            total = totals[(job.project, job.unit, job.period_start)]
            total[0] += job.ledger
            total[1] += job.site
        if job.in_ledger and not job.at_site and _booked_later(job, site_books_after):
            not_yet.append(key)
            continue
        matched += job.in_ledger and job.at_site
        judged = _judge(job, tolerance)
        if judged is not None:
            differences.append(
                Difference(
                    kind=judged,
                    site=site,
                    project=job.project,
                    unit=job.unit,
                    period_start=job.period_start,
                    job_id=None if key.startswith(("site:", "entry:")) else key,
                    site_job_ids=tuple(job.site_job_ids),
                    ledger_amount=job.ledger,
                    site_amount=job.site,
                )
            )
    return Reconciliation(
        site=site,
        differences=differences,
        totals=[
            PeriodTotal(project, site, unit, period, ledger_amount, site_amount)
            for (project, unit, period), (ledger_amount, site_amount) in sorted(
                totals.items(), key=lambda item: (item[0][0], item[0][1], item[0][2] or service.EPOCH)
            )
        ],
        jobs_matched=matched,
        not_yet_at_site=not_yet,
        ignored_records=ignored,
    )


def _add_ledger_line(jobs: dict[str, _Job], line: service.UsageLine) -> None:
    job = jobs[line.job_id or f"entry:{line.effective_at.isoformat()}"]
    job.project, job.unit, job.period_start, job.in_ledger = line.project, line.unit, line.period_start, True
    job.ledger += line.amount
    job.last_charge = line.effective_at if job.last_charge is None else max(job.last_charge, line.effective_at)


def _booked_later(job: _Job, site_books_after: datetime | None) -> bool:
    return site_books_after is not None and job.last_charge is not None and job.last_charge >= site_books_after


def _judge(job: _Job, tolerance: Decimal) -> DifferenceKind | None:
    if job.in_ledger and not job.at_site:
        return DifferenceKind.MISSING_AT_SITE if job.ledger else None
    if job.at_site and not job.in_ledger:
        return DifferenceKind.MISSING_IN_LEDGER if job.site > tolerance else None
    if job.site_units != {job.unit}:
        return DifferenceKind.UNIT_DIFFERS
    if abs(job.site - job.ledger) > tolerance:
        return DifferenceKind.AMOUNT_DIFFERS
    return None


def _difference(kind: DifferenceKind, site: str, project: str | None, record: UsageRecord) -> Difference:
    return Difference(
        kind=kind,
        site=site,
        project=project,
        unit=None,
        period_start=None,
        job_id=record.job_id,
        site_job_ids=(record.site_job_id,),
        ledger_amount=Decimal(0),
        site_amount=Decimal(0),
    )


def _period_of(periods: Sequence[service.Balance], project: str, site: str, unit: str, at: datetime) -> datetime | None:
    for period in periods:
        if (period.project, period.site, period.unit) == (project, site, unit) and period.is_active(at):
            return period.period_start
    return None


def ledger_usage_at(session: Session, *, site: str, start: datetime, end: datetime) -> list[service.UsageLine]:
    """Every project's charge and overrun lines at ``site`` dated in ``[start, end)``, read-only."""
    projects = sorted({b.project for b in service.all_balances(session) if b.site == site})
    return [
        line
        for project in projects
        for line in service.usage(session, project=project, site=site, start=start, end=end)
    ]


def reconcile_session(
    session: Session,
    *,
    site: str,
    start: datetime,
    end: datetime,
    site_records: Iterable[UsageRecord],
    projects_by_account: Mapping[str, str],
    formulas: Mapping[str, BillingFormula],
    tolerance: Decimal = DEFAULT_TOLERANCE,
    site_books_after: datetime | None = None,
) -> Reconciliation:
    """``reconcile`` with the ledger side read from ``session`` for the window ``[start, end)``."""
    return reconcile(
        site=site,
        ledger_lines=ledger_usage_at(session, site=site, start=start, end=end),
        site_records=site_records,
        projects_by_account=projects_by_account,
        formulas=formulas,
        periods=[b for b in service.all_balances(session) if b.site == site],
        tolerance=tolerance,
        site_books_after=site_books_after,
    )

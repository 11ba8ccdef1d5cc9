"""Which replica reconciles a site, and the last result that every replica exports.

Every replica that runs a forwarder also keeps the reconciliation schedule, yet a site's accounting is asked
once per interval whatever the number of replicas: the first replica whose tick finds the site's last run
older than the interval takes a lease on it (a conditional UPDATE, so two replicas never both win), and
records the totals when it is done. At each tick every replica exports the recorded totals, so the gauge,
whose alert takes the maximum over replicas, shows the same current figure everywhere: a replica that ran
an earlier round does not go on exporting what it found then.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import rounds
from gateway.ledger.models import ReconciliationRun
from gateway.ledger.reconcile import PeriodTotal


@dataclass(frozen=True)
class SiteTotal:
    """Site accounting minus ledger charges for one project and unit at one site, as last recorded."""

    site: str
    project: str
    unit: str
    delta: Decimal


def claim(session: Session, *, site: str, owner: str, now: datetime, interval: timedelta, lease: timedelta) -> bool:
    """Take the lease on ``site``'s next run if it is due (last run at least ``interval`` ago, or none) and no
    other replica holds it. True: the caller runs it, then calls ``finish`` (or ``release``)."""
    return rounds.claim(
        session, ReconciliationRun, site=site, owner=owner, now=now, interval=interval, lease=lease, totals=[]
    )


def finish(session: Session, *, site: str, owner: str, began: datetime, totals: Iterable[PeriodTotal]) -> bool:
    """Record the totals of a run that began at ``began``. False if the lease was lost meanwhile (it expired
    and another replica took it)."""
    by_unit = _by_project_and_unit(totals)
    return rounds.end(session, ReconciliationRun, sites=[site], owner=owner, began=began, totals=by_unit)


def release(session: Session, *, site: str, owner: str) -> None:
    """Give the lease back after a failed run, so that the next tick of any replica tries again."""
    rounds.end(session, ReconciliationRun, sites=[site], owner=owner, began=None)


def latest(session: Session) -> list[SiteTotal]:
    """The totals of every site's last finished run."""
    rows = session.scalars(select(ReconciliationRun).where(ReconciliationRun.last_run_at.is_not(None)))
    return [
        SiteTotal(run.site, total["project"], total["unit"], Decimal(total["delta"]))
        for run in rows
        for total in run.totals
    ]


def _by_project_and_unit(totals: Iterable[PeriodTotal]) -> list[dict[str, str]]:
    """One figure per (project, unit): the allocation period whose difference is largest. A window may span
    two periods, and a sum could let one period's surplus hide another's shortfall."""
    largest: dict[tuple[str, str], Decimal] = {}
    for total in totals:
        key = (total.project, total.unit)
        if key not in largest or abs(total.delta) > abs(largest[key]):
            largest[key] = total.delta
    return [{"project": p, "unit": u, "delta": str(delta)} for (p, u), delta in sorted(largest.items())]

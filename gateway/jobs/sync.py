"""Status sync and settlement: one batched status query per site per cycle, never one per job, and one
cycle per site and ``status_interval_seconds`` across all replicas (a lease in ``status_sync_runs``).

When a job ends, the charge is priced from what the site's accounting reports (elapsed × allocated
resources) with the partition's formula and booked in the same transaction as the job's final state; a job
that never started is voided. Settlement is idempotent, so several replicas syncing at once are harmless.
A site with no active job gets one health probe per cycle instead, so its health stays current; a site
whose circuit is open is left alone, and a half-open one gets the single probe the breaker allows.

A state the site reports that is not final (or that this code does not know) moves nothing here: the job is
watched on, so a requeued job's later run is charged too. A job missing from both the site's queue and its
accounting past its time limit plus ``forgotten_grace_minutes`` is ``lost``: its reservation stays held, an
alert fires, and the sync keeps asking for it until it turns up or an operator resolves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from gateway import rounds
from gateway.billing import from_micro, price
from gateway.clock import Clock
from gateway.connectors.base import Connector, SiteJobStatus, SiteState
from gateway.connectors.health import SiteHealth, rate_limit_wait
from gateway.db import Database
from gateway.errors import AntennaError, SiteUnavailable
from gateway.jobs.models import AT_SITE_STATES, Job, JobState, StatusSyncRun
from gateway.jobs.service import active_site_jobs, record_transition
from gateway.ledger import service as ledger
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.supervision import Supervisor

log = logging.getLogger("antenna.sync")

_STATE = {
    SiteState.PENDING: JobState.PENDING,
    SiteState.RUNNING: JobState.RUNNING,
    SiteState.COMPLETED: JobState.COMPLETED,
    SiteState.FAILED: JobState.FAILED,
    SiteState.CANCELLED: JobState.CANCELLED,
    SiteState.TIMEOUT: JobState.TIMEOUT,
}


def _moves(status: SiteJobStatus, state: str, started: bool) -> bool:
    """Whether what the site reports changes the job's row."""
    target = _STATE.get(status.state)
    if target is None:  # UNKNOWN: left as it is, watched on
        return False
    return target.value != state or (status.started_at is not None and not started)


class StatusSync:
    def __init__(
        self,
        *,
        db: Database,
        connectors: dict[str, Connector],
        health: SiteHealth,
        settings: Settings,
        clock: Clock,
        metrics: Metrics,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.supervisor = supervisor or Supervisor(asyncio.Event())
        self.db = db
        self.connectors = connectors
        self.health = health
        self.settings = settings
        self.clock = clock
        self.metrics = metrics

    async def sync_site(self, site: str) -> int:
        """One cycle for one site: ONE status query for all its active jobs. Returns jobs updated."""
        connector = self.connectors[site]
        grace = timedelta(minutes=self.settings.sites[site].forgotten_grace_minutes)
        jobs = await asyncio.to_thread(
            self.db.run,
            lambda s: [
                (j.id, j.site_job_id, j.state, j.started_at is not None, _forgotten_after(j, grace))
                for j in active_site_jobs(s, site)
            ],
        )
        site_job_ids = [sid for _, sid, _, _, _ in jobs if sid is not None]
        try:
            if not site_job_ids:
                await connector.health()
                self.health.success(site)
                return 0
            statuses = await connector.statuses(site_job_ids)
        except AntennaError as exc:
            wait = rate_limit_wait(exc)
            self.health.failure(site, exc.detail, retry_after=wait)
            self.metrics.sync_calls.labels(site, "unavailable").inc()
            kind = "rate-limited" if wait else exc.slug if not isinstance(exc, SiteUnavailable) else "unavailable"
            self.metrics.connector_errors.labels(site, kind).inc()
            log.warning("status sync failed", extra={"site": site, "error": exc.detail})
            return 0
        self.health.success(site)
        self.metrics.sync_calls.labels(site, "ok").inc()
        # Only jobs whose state moved are written, all in one transaction: a cycle over 1,000 running jobs
        # that did not change costs the site one call and the database one read.
        changed = [
            (job_id, status)
            for job_id, site_job_id, state, started, _ in jobs
            if (status := statuses.get(site_job_id or "")) is not None and _moves(status, state, started)
        ]
        now = self.clock.now()
        forgotten = [
            job_id
            for job_id, site_job_id, state, _, after in jobs
            if site_job_id not in statuses and state != JobState.LOST.value and now > after
        ]
        if forgotten:
            await asyncio.to_thread(self.db.run, lambda s: sum(self._forget(s, job_id) for job_id in forgotten))
        if not changed:
            return 0
        try:
            return await asyncio.to_thread(
                self.db.run, lambda s: sum(self._apply(s, job_id, status) for job_id, status in changed)
            )
        except AntennaError:
            raise
        except Exception:  # one job's write failed: write the others one by one
            log.exception("batched status update failed; applying job by job", extra={"site": site})
        updated = 0
        for job_id, status in changed:
            try:
                updated += await asyncio.to_thread(self.db.run, lambda s, j=job_id, st=status: self._apply(s, j, st))
            except Exception:
                log.exception("status update failed", extra={"site": site, "job_id": job_id})
        return updated

    def _forget(self, session: Session, job_id: str) -> bool:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.state not in {s.value for s in AT_SITE_STATES}:
            return False
        limit = int(job.spec.get("time_limit_minutes", 0))
        log.error("job missing at the site past its time limit: lost", extra={"job_id": job.id, "site": job.site})
        detail = (
            f"site job {job.site_job_id} is in neither the site's queue nor its accounting, {limit} min time limit "
            "and grace passed; reservation held until it turns up or an operator resolves it"
        )
        return record_transition(session, job, JobState.LOST, self.clock.now(), detail)

    def _apply(self, session: Session, job_id: str, status: SiteJobStatus) -> bool:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or JobState(job.state).is_final:
            return False
        now = self.clock.now()
        target = _STATE.get(status.state)
        if target is None:
            return False
        if status.started_at is not None and job.started_at is None:
            job.started_at = status.started_at
            if target != JobState.RUNNING:
                record_transition(session, job, JobState.RUNNING, status.started_at)
        changed = record_transition(session, job, target, status.ended_at or now, status.reason)
        job.exit_code = status.exit_code
        if target.is_final:
            self._settle(session, job, status)
        return changed

    def _settle(self, session: Session, job: Job, status: SiteJobStatus) -> None:
        now = self.clock.now()
        elapsed = status.elapsed_seconds or 0
        if status.started_at is None or elapsed == 0 or status.allocated is None:
            result = ledger.settle(session, job_id=job.id, outcome="void", at=now, reason=f"{job.state}; never ran")
        else:
            site = self.settings.sites[job.site]
            formula = site.partitions[job.partition].billing
            amount = price(formula, status.allocated, elapsed)
            result = ledger.settle(
                session,
                job_id=job.id,
                outcome="charge",
                amount=amount,
                at=now,
                reason=f"{job.state}: {elapsed} s on {status.allocated.nodes} node(s)",
            )
        if result.replayed:
            return
        labels = (job.project, job.site, job.unit)
        if result.charged or result.overrun:
            self.metrics.charges.labels(*labels).inc()
            self.metrics.charged_amount_booked.labels(*labels).inc(float(result.charged + result.overrun))
        if result.overrun > Decimal(0):
            self.metrics.overruns.labels(job.site, job.unit).inc()
            self.metrics.overrun_amount.labels(job.site, job.unit).inc(float(result.overrun))
            log.warning(
                "charge above reservation booked as overrun",
                extra={
                    "job_id": job.id,
                    "project": job.project,
                    "overrun": str(result.overrun),
                    "reserved": str(from_micro(job.price)),
                },
            )

    async def run_once(self, sites: Sequence[str] | None = None) -> int:
        names = [s for s in (sites or list(self.connectors)) if self.health.acquire(s)]
        counts = await asyncio.gather(*(self.sync_site(s) for s in names), return_exceptions=True)
        total = 0
        failure: BaseException | None = None
        for site, count in zip(names, counts, strict=True):
            if isinstance(count, BaseException):
                log.error("status sync failed", extra={"site": site, "error": repr(count)})
                failure = failure or count
            else:
                total += count
        if failure is not None and not isinstance(failure, AntennaError):
            raise failure  # not a site's trouble (the database, a bug): the round failed
        return total

    async def run_due(self, owner: str) -> list[str]:
        """Sync each site whose last sync, by any replica, is its ``status_interval_seconds`` old: one replica
        per site and interval takes a lease on it (a conditional UPDATE), so a site is asked once per interval
        however many replicas run. Returns the sites this replica synced."""
        now = self.clock.now()
        due = []
        for site in self.connectors:
            interval = timedelta(seconds=self.settings.sites[site].status_interval_seconds)
            # A replica that dies mid-round leaves the lease to expire: a round is bounded by the connectors' timeouts.
            lease = interval + timedelta(minutes=1)
            take = functools.partial(
                rounds.claim, table=StatusSyncRun, site=site, owner=owner, now=now, interval=interval, lease=lease
            )
            if await asyncio.to_thread(self.db.run, take):
                due.append(site)
        if not due:
            return []
        try:
            await self.run_once(due)
        except BaseException:
            # Let any replica's next tick try again rather than wait out the lease (if the database answers).
            give_back = functools.partial(rounds.end, table=StatusSyncRun, sites=due, owner=owner, began=None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.to_thread(self.db.run, give_back), timeout=2)
            raise
        done = functools.partial(rounds.end, table=StatusSyncRun, sites=due, owner=owner, began=now)
        await asyncio.to_thread(self.db.run, done)
        return due

    async def run_forever(self, stop: asyncio.Event, *, owner: str) -> None:
        intervals = [s.status_interval_seconds for s in self.settings.sites.values()]
        tick = max(0.5, min(intervals, default=15.0) / 3)  # a site is synced within a third of its interval
        while not stop.is_set():
            wait = tick
            try:
                await self.run_due(owner)
            except Exception as exc:  # the database down, a bug: back off and go on; /readyz shows it
                wait = max(tick, self.supervisor.failed("status-sync", exc))
            else:
                self.supervisor.beat("status-sync")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)


def _forgotten_after(job: Job, grace: timedelta) -> datetime:
    """When a job the site no longer reports counts as lost: its time limit and the grace after it started,
    or after it was submitted when it never started (a queued job is in the queue, so never missing)."""
    limit = timedelta(minutes=int(job.spec.get("time_limit_minutes", 0)))
    return (job.started_at or job.created_at) + limit + grace

"""The forwarder: delivers outbox entries to sites, each exactly once, with any number of workers.

An entry is claimed with a lease in a short transaction (PostgreSQL ``FOR UPDATE SKIP LOCKED``; SQLite
serialises writers), and the site is called only after that transaction has committed, so no row lock is
ever held across a network call. A crash after the site accepted a job but before we recorded it leaves
the lease to expire; the next attempt first looks the job up at the site by its stamp and only submits
if it is not there. Retries are bounded, with exponential backoff, and respect the site's circuit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from gateway.clock import Clock
from gateway.connectors.base import Connector, SiteJobRequest
from gateway.connectors.health import SiteHealth
from gateway.db import Database
from gateway.errors import AntennaError, SiteRejected, SiteUnavailable
from gateway.jobs.models import Job, JobState, OutboxEntry
from gateway.jobs.service import record_transition
from gateway.ledger import service as ledger
from gateway.metrics import Metrics
from gateway.settings import ForwarderSettings

log = logging.getLogger("antenna.forwarder")
LEASE = timedelta(seconds=120)


@dataclass(frozen=True)
class Claim:
    entry_id: int
    job_id: str
    site: str
    action: str
    attempts: int


class Forwarder:
    def __init__(
        self,
        *,
        db: Database,
        connectors: dict[str, Connector],
        health: SiteHealth,
        settings: ForwarderSettings,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self.db = db
        self.connectors = connectors
        self.health = health
        self.settings = settings
        self.clock = clock
        self.metrics = metrics
        self.worker = f"fwd-{uuid.uuid4().hex[:8]}"

    # --- claiming (database, short transactions) ---------------------------------------------------

    def _claim(self, session: Session) -> list[Claim]:
        now = self.clock.now()
        open_sites = [s for s in self.connectors if not self.health.allows(s)]
        query = (
            select(OutboxEntry)
            .where(
                OutboxEntry.done_at.is_(None),
                OutboxEntry.available_at <= now,
                or_(OutboxEntry.leased_until.is_(None), OutboxEntry.leased_until < now),
            )
            .order_by(OutboxEntry.id)
            .limit(self.settings.batch_size)
        )
        if open_sites:
            query = query.where(OutboxEntry.site.not_in(open_sites))
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        claims = []
        for entry in session.scalars(query).all():
            entry.leased_until, entry.lease_owner = now + LEASE, self.worker
            entry.attempts += 1
            claims.append(Claim(entry.id, entry.job_id, entry.site, entry.action, entry.attempts))
        return claims

    def _request(self, session: Session, claim: Claim) -> tuple[SiteJobRequest | None, str | None]:
        job = session.get_one(Job, claim.job_id)
        if claim.action == "submit" and job.state != JobState.ACCEPTED.value:
            return None, None  # cancelled before forwarding, or already recorded
        spec = job.spec
        request = SiteJobRequest(
            job_id=job.id,
            account=job.site_account,
            project_account=job.project_account,
            partition=job.partition,
            name=job.name,
            script=job.script,
            nodes=int(spec["nodes"]),
            cores=int(spec["cores"]),
            memory_gb=int(float(spec["memory_gb"])),
            gpus=int(spec["gpus"]),
            time_limit_minutes=int(spec["time_limit_minutes"]),
            environment=spec.get("environment") or {},
            working_directory=spec.get("working_directory"),
        )
        return request, job.site_job_id

    def _finish(self, session: Session, claim: Claim, *, site_job_id: str | None = None, error: str = "") -> None:
        entry = session.get_one(OutboxEntry, claim.entry_id)
        now = self.clock.now()
        entry.done_at, entry.leased_until, entry.last_error = now, None, error[:500]
        if site_job_id is not None:
            job = session.get_one(Job, claim.job_id)
            if job.state == JobState.ACCEPTED.value:
                job.site_job_id = site_job_id
                record_transition(session, job, JobState.SUBMITTED, now, f"site job {site_job_id}")

    def _reject(self, session: Session, claim: Claim, reason: str) -> None:
        self._finish(session, claim, error=reason)
        job = session.get_one(Job, claim.job_id)
        now = self.clock.now()
        if claim.action == "submit" and job.state == JobState.ACCEPTED.value:
            record_transition(session, job, JobState.REJECTED, now, reason)
            ledger.settle(session, job_id=job.id, outcome="void", at=now, reason=f"rejected: {reason}"[:500])

    def _retry_later(self, session: Session, claim: Claim, error: str, retry_after: float) -> None:
        entry = session.get_one(OutboxEntry, claim.entry_id)
        delay = min(self.settings.backoff_max_seconds, self.settings.backoff_base_seconds * 2 ** (claim.attempts - 1))
        entry.available_at = self.clock.now() + timedelta(seconds=max(delay, retry_after))
        entry.leased_until, entry.last_error = None, error[:500]

    # --- delivering (network, no transaction open) -------------------------------------------------

    async def run_once(self) -> int:
        claims = await asyncio.to_thread(self.db.run, self._claim)
        if claims:
            await asyncio.gather(*(self._deliver(claim) for claim in claims))
        return len(claims)

    async def _deliver(self, claim: Claim) -> None:
        connector = self.connectors.get(claim.site)
        try:
            request, site_job_id = await asyncio.to_thread(self.db.run, lambda s: self._request(s, claim))
            if request is None:
                await asyncio.to_thread(self.db.run, lambda s: self._finish(s, claim, error="nothing to do"))
                return
            if connector is None:
                await asyncio.to_thread(
                    self.db.run, lambda s: self._reject(s, claim, "the site is no longer configured")
                )
                return
            found: str | None = None
            if claim.action == "submit":
                if claim.attempts > 1:  # an earlier attempt may have reached the site: never submit twice
                    found = await connector.find(account=request.account, job_id=request.job_id)
                found = found or await connector.submit(request)
            elif site_job_id is not None:
                await connector.cancel(account=request.account, site_job_id=site_job_id)
            self.health.success(claim.site)
            await asyncio.to_thread(self.db.run, lambda s: self._finish(s, claim, site_job_id=found))
            self.metrics.forwarded.labels(claim.site, claim.action, "delivered").inc()
        except SiteRejected as exc:
            reason = exc.detail
            log.warning("site refused job", extra={"job_id": claim.job_id, "site": claim.site, "reason": reason})
            self.metrics.forwarded.labels(claim.site, claim.action, "rejected").inc()
            self.metrics.connector_errors.labels(claim.site, exc.slug).inc()
            await asyncio.to_thread(self.db.run, lambda s: self._reject(s, claim, reason))
        except (SiteUnavailable, AntennaError, OSError) as exc:
            await self._transient(claim, exc)

    async def _transient(self, claim: Claim, exc: Exception) -> None:
        detail = exc.detail if isinstance(exc, AntennaError) else f"{type(exc).__name__}: {exc}"
        retry_after = float(exc.retry_after) if isinstance(exc, SiteUnavailable) else 0.0
        self.health.failure(claim.site, detail, retry_after=retry_after)
        self.metrics.connector_errors.labels(claim.site, "unavailable").inc()
        if claim.attempts >= self.settings.max_attempts:
            self.metrics.forwarded.labels(claim.site, claim.action, "gave_up").inc()
            reason = f"site unavailable after {claim.attempts} attempts: {detail}"
            log.error("forwarding gave up", extra={"job_id": claim.job_id, "site": claim.site})
            await asyncio.to_thread(self.db.run, lambda s: self._reject(s, claim, reason))
            return
        self.metrics.forwarded.labels(claim.site, claim.action, "retry").inc()
        log.info("forwarding will retry", extra={"job_id": claim.job_id, "site": claim.site, "error": detail})
        await asyncio.to_thread(self.db.run, lambda s: self._retry_later(s, claim, detail, retry_after))

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                delivered = await self.run_once()
            except AntennaError as exc:  # e.g. the database busy: wait and go on
                log.warning("forwarder cycle failed", extra={"error": exc.detail})
                delivered = 0
            if not delivered:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.settings.poll_seconds)

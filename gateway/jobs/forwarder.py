"""The forwarder: delivers outbox entries to sites, each exactly once, with any number of workers.

An entry is claimed with a lease in a short transaction (PostgreSQL ``FOR UPDATE SKIP LOCKED``; SQLite
serialises writers), and the site is called only after that transaction has committed, so no row lock is
ever held across a network call. A crash after the site accepted a job but before we recorded it leaves
the lease to expire; the next attempt first looks the job up at the site by its stamp and only submits
if it is not there. A delivery never outlives half its lease, so two workers never hold one entry: a worker
checks its lease (on the monotonic clock, which runs on while a process is stopped) before each call to the
site, and every outcome it writes is fenced by the lease (owner and attempt number, the row locked), so a
worker paused past its lease neither calls the site nor overwrites what another worker found.

A submission whose outcome is unknown after its last attempt (sent, but the answer lost) is never voided:
the job goes to ``lost``, keeps its reservation, and its entry stays open, looked up by its stamp with a long
backoff until it is found at the site or an operator resolves it. Only a submission that provably never
reached the site, or that the site refused, is voided. Entries of a site this process does not know (a
newer replica's site during a rolling deploy) are left alone: retiring a site is an operator's decision.

Each site has its own bounded number of deliveries in flight, so a slow site never holds up the others.
Retries are bounded, with exponential backoff. While a site's circuit is open (or the site throttled us
with a 429) nothing is sent to it; when the circuit half-opens ONE health probe goes, not a job, so a
long outage queues jobs instead of using up their attempts, and the held-back work resumes after the probe.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.clock import Clock
from gateway.connectors.base import Connector, SiteJobRequest
from gateway.connectors.health import SiteHealth, rate_limit_wait
from gateway.db import Database
from gateway.errors import AntennaError, SiteAuthFailed, SiteRejected, SiteUnavailable
from gateway.jobs import outbox
from gateway.jobs.models import Job, JobEvent, JobState, OutboxEntry
from gateway.jobs.service import record_transition
from gateway.ledger import service as ledger
from gateway.metrics import Metrics
from gateway.settings import ForwarderSettings
from gateway.supervision import Supervisor

log = logging.getLogger("antenna.forwarder")
LEASE = timedelta(seconds=120)
MAX_IN_FLIGHT_PER_SITE = 8
Outcome = functools.partial[None]  # a write for the next transaction; its ``claim`` keyword names the entry


@dataclass(frozen=True)
class Claim:
    entry_id: int
    job_id: str
    site: str
    action: str
    attempts: int  # also the fencing token: every claim of the entry counts one more
    request: SiteJobRequest | None = None  # None: nothing to send (cancelled before forwarding, or recorded)
    site_job_id: str | None = None
    find_only: bool = False  # a lost job, or one cancelled in flight: look it up, never submit it again
    cancel_requested: bool = False  # cancelled in flight: not found at the site, it ends here (voided)
    deadline: float = float("inf")  # the event loop's clock: past it the lease may be another worker's


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
        lease: timedelta = LEASE,
        max_in_flight_per_site: int = MAX_IN_FLIGHT_PER_SITE,
        supervisor: Supervisor | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self.db = db
        self.connectors = connectors
        self.health = health
        self.settings = settings
        self.clock = clock
        self.metrics = metrics
        self.lease = lease
        self.max_in_flight = max_in_flight_per_site
        self.supervisor = supervisor or Supervisor(asyncio.Event())
        # The clock leases are checked against before each call to the site: it runs on while the process is
        # stopped (SIGSTOP), so a worker resumed past its lease sees it. Default: the event loop's.
        self.monotonic = monotonic or (lambda: asyncio.get_running_loop().time())
        self.worker = f"fwd-{uuid.uuid4().hex[:8]}"
        self._claimed: Counter[str] = Counter()  # claims (and probes) not finished yet, per site
        self._slots: dict[str, asyncio.Semaphore] = {}  # at most max_in_flight calls at once per site
        self._tasks: set[asyncio.Task[None]] = set()
        self._outcomes: list[Outcome] = []  # what deliveries found, written with the next transaction
        self._room = asyncio.Event()  # set whenever a delivery ends: there may be room for more
        # Anything that may have made entries due (a wake, a notification, a poll's timeout) counts a signal.
        # When a claim came back short for every site, nothing more is due until the next signal: a
        # delivery's end then records its outcome without looking for work again (see _cycle).
        self._signals = 0
        self._quiet_at: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.listener: outbox.OutboxListener | None = None  # while run_forever runs

    # --- claiming (database, short transactions) ---------------------------------------------------

    def _claim(self, session: Session, capacity: Mapping[str, int], deadline: float) -> list[Claim]:
        """Lease up to ``capacity[site]`` due entries per site; ``deadline`` is when the leases stop being safe
        to act on, on the event loop's clock (measured before the transaction, so on the early side)."""
        now = self.clock.now()
        due = (
            OutboxEntry.done_at.is_(None),
            OutboxEntry.available_at <= now,
            (OutboxEntry.leased_until.is_(None)) | (OutboxEntry.leased_until < now),
        )
        # Only sites this process knows: an older replica must not touch a site a newer one added.
        queries = [
            # Longest due first: entries looked at again and again (lost jobs' lookups) never starve new ones.
            select(OutboxEntry)
            .where(*due, OutboxEntry.site == site)
            .order_by(OutboxEntry.available_at, OutboxEntry.id)
            .limit(limit)
            for site, limit in capacity.items()
            if limit > 0 and site in self.connectors
        ]
        postgres = session.get_bind().dialect.name == "postgresql"
        entries = []
        for query in queries:
            for entry in session.scalars(query.with_for_update(skip_locked=True) if postgres else query).all():
                entry.leased_until, entry.lease_owner = now + self.lease, self.worker
                entry.attempts += 1
                entries.append(entry)
        # The jobs are read in the same transaction: one round trip to the database per batch, not per job.
        jobs = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_({e.job_id for e in entries})))}
        claims = []
        for entry in entries:
            job = jobs[entry.job_id]
            lookup = job.state == JobState.LOST.value or job.cancel_requested_at is not None
            wanted = entry.action != "submit" or job.state in (JobState.ACCEPTED.value, JobState.LOST.value)
            request = self._request(job) if wanted else None
            claims.append(
                Claim(
                    entry.id,
                    entry.job_id,
                    entry.site,
                    entry.action,
                    entry.attempts,
                    request,
                    job.site_job_id,
                    find_only=entry.action == "submit" and lookup,
                    cancel_requested=job.cancel_requested_at is not None,
                    deadline=deadline,
                )
            )
        return claims

    def _deadline(self) -> float:
        """When a lease taken now stops being safely ours, on the event loop's (monotonic) clock."""
        return self.monotonic() + self.lease.total_seconds() / 2

    @staticmethod
    def _request(job: Job) -> SiteJobRequest:
        spec = job.spec
        return SiteJobRequest(
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

    def _held(self, session: Session, claim: Claim) -> OutboxEntry | None:
        """The claim's entry if this worker still holds it: leased by it, at the attempt it claimed, not done.

        The rows were read locked (see _write), so another worker's claim cannot slip in before this write
        commits. A stale outcome (this worker was paused past its lease and another took the entry) is dropped:
        the other worker's delivery is the one that counts."""
        entry = session.get_one(OutboxEntry, claim.entry_id)
        if entry.lease_owner == self.worker and entry.attempts == claim.attempts and entry.done_at is None:
            return entry
        log.warning(
            "stale delivery outcome dropped: the entry's lease is another worker's now",
            extra={"job_id": claim.job_id, "site": claim.site, "attempt": claim.attempts},
        )
        return None

    def _finish(self, session: Session, *, claim: Claim, site_job_id: str | None = None, error: str = "") -> None:
        entry = self._held(session, claim)
        if entry is None:
            if site_job_id is not None and entry_done(session, claim):
                # Found after an operator resolved it (or after another worker recorded it): say so loudly.
                log.error(
                    "job found at the site after its entry was closed: check its reservation",
                    extra={"job_id": claim.job_id, "site": claim.site, "site_job_id": site_job_id},
                )
            return
        now = self.clock.now()
        entry.done_at, entry.leased_until, entry.last_error = now, None, error[:500]
        if site_job_id is None:
            return
        job = session.get_one(Job, claim.job_id)
        if job.state in (JobState.ACCEPTED.value, JobState.LOST.value) and job.site_job_id is None:
            job.site_job_id = site_job_id
            found = " (found at the site by its stamp)" if job.state == JobState.LOST.value else ""
            record_transition(session, job, JobState.SUBMITTED, now, f"site job {site_job_id}{found}")
            if job.cancel_requested_at is not None:
                # Cancelled while its submission was in flight: the site has the job, so stop it there; the
                # status sync settles what it ran.
                outbox.queue(
                    session,
                    OutboxEntry(job_id=job.id, site=job.site, action="cancel", available_at=now, created_at=now),
                )
                self._signals += 1  # new work: the next cycle looks for it, even if this one found nothing more
                session.add(
                    JobEvent(
                        job_id=job.id, state=job.state, at=now, detail=f"site job {site_job_id} cancelled at the site"
                    )
                )

    def _not_at_site(self, session: Session, *, claim: Claim) -> None:
        """A job cancelled in flight was looked up and is not at the site: it ends here, voided."""
        entry = self._held(session, claim)
        if entry is None:
            return
        now = self.clock.now()
        entry.done_at, entry.leased_until, entry.last_error = now, None, "cancelled; not at the site"
        job = session.get_one(Job, claim.job_id)
        if job.state in (JobState.ACCEPTED.value, JobState.LOST.value):
            record_transition(session, job, JobState.CANCELLED, now, "cancelled; the site never had it")
            ledger.settle(session, job_id=job.id, outcome="void", at=now, reason="cancelled; never reached the site")

    def _reject(self, session: Session, *, claim: Claim, reason: str) -> None:
        """The site refused the submission, or it provably never reached the site: void it."""
        entry = self._held(session, claim)
        if entry is None:
            return
        now = self.clock.now()
        entry.done_at, entry.leased_until, entry.last_error = now, None, reason[:500]
        job = session.get_one(Job, claim.job_id)
        if claim.action == "submit" and job.state == JobState.ACCEPTED.value:
            record_transition(session, job, JobState.REJECTED, now, reason)
            ledger.settle(session, job_id=job.id, outcome="void", at=now, reason=f"rejected: {reason}"[:500])

    def _lose(self, session: Session, *, claim: Claim, reason: str) -> None:
        """The submission may be at the site and we cannot tell: hold the reservation and keep looking."""
        entry = self._held(session, claim)
        if entry is None:
            return
        now = self.clock.now()
        entry.available_at = now + timedelta(seconds=self.settings.lost_lookup_seconds)
        entry.leased_until, entry.last_error = None, reason[:500]
        job = session.get_one(Job, claim.job_id)
        if job.state == JobState.ACCEPTED.value:
            record_transition(session, job, JobState.LOST, now, reason)

    def _retry_later(self, session: Session, *, claim: Claim, error: str, retry_after: float) -> None:
        entry = self._held(session, claim)
        if entry is None:
            return
        if claim.find_only and claim.action == "submit":
            delay = self.settings.lost_lookup_seconds  # a lost job is looked for patiently, never given up on
        else:
            base, cap = self.settings.backoff_base_seconds, self.settings.backoff_max_seconds
            delay = min(cap, base * 2 ** (claim.attempts - 1))
        entry.available_at = self.clock.now() + timedelta(seconds=max(delay, retry_after))
        entry.leased_until, entry.last_error = None, error[:500]

    def _release(self, session: Session, *, claim: Claim) -> None:
        """Give a claim back untried (the site's circuit closed meanwhile): it costs no attempt."""
        entry = self._held(session, claim)
        if entry is None:
            return
        entry.attempts = max(0, entry.attempts - 1)
        entry.leased_until = None
        entry.available_at = datetime.fromtimestamp(self.health.retry_at(claim.site), UTC)

    # --- delivering (network, no transaction open) -------------------------------------------------

    def _capacity(self) -> dict[str, int]:
        """How many entries each site may take now; probes half-open sites instead of sending them work."""
        capacity = {}
        for site in self.connectors:
            if not self.health.allows(site):
                continue
            if self.health.half_open(site):
                if self.health.acquire(site):
                    self._spawn(site, self._probe(site))
                continue
            # Up to twice the calls allowed at once are claimed, so that a call ending starts the next at
            # once, without waiting for the transaction that records it.
            capacity[site] = min(self.settings.batch_size, 2 * self.max_in_flight - self._claimed[site])
        return capacity

    def _spawn(self, site: str, work: Coroutine[Any, Any, None]) -> None:
        self._claimed[site] += 1
        slots = self._slots.setdefault(site, asyncio.Semaphore(self.max_in_flight))

        async def run() -> None:
            try:
                async with slots:
                    await work
            except Exception:  # a bug must not stop the forwarder; the lease makes the entry come back
                log.exception("delivery failed unexpectedly", extra={"site": site})
            finally:
                self._claimed[site] -= 1
                self._room.set()

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _write(
        self, session: Session, outcomes: list[Outcome], capacity: Mapping[str, int] | None, deadline: float = 0.0
    ) -> list[Claim]:
        """Record what deliveries found and claim the next entries, in ONE transaction: under load, many
        outcomes share a commit (the lease covers any lost with a crash before it)."""
        claims = [o.keywords["claim"] for o in outcomes]
        loaded: list[object] = []  # held: the session's identity map keeps only weak references
        if claims:  # load the rows in two queries, not two per outcome
            # Locked, jobs first and then entries, each in id order, as cancel, resolve and the sync lock them:
            # a cancel cannot slip in between reading a job and writing it, and another worker's claim waits
            # for this transaction, so the lease checked is the lease written against (the fence of _held).
            jobs = select(Job).where(Job.id.in_({c.job_id for c in claims}))
            entries = select(OutboxEntry).where(OutboxEntry.id.in_([c.entry_id for c in claims]))
            if session.get_bind().dialect.name == "postgresql":
                jobs = jobs.order_by(Job.id).with_for_update()
                entries = entries.order_by(OutboxEntry.id).with_for_update()
            loaded += session.scalars(jobs)
            loaded += session.scalars(entries)
        with session.no_autoflush:  # one flush for all of them, not one before each read
            for outcome in outcomes:
                outcome(session)
        return self._claim(session, capacity, deadline) if capacity is not None else []

    async def _cycle(self) -> list[asyncio.Task[None]]:
        """Write the outcomes so far, claim what there is room for, start delivering it; the tasks started."""
        before = set(self._tasks)
        outcomes, self._outcomes = self._outcomes, []
        seen = self._signals  # before the transaction: a signal arriving during it is not lost
        capacity = self._capacity()
        looking = seen != self._quiet_at and any(capacity.values())
        if outcomes or looking:
            wanted = capacity if looking else None
            deadline = self._deadline()
            try:
                claims = await asyncio.to_thread(self.db.run, lambda s: self._write(s, outcomes, wanted, deadline))
            except Exception:
                if not outcomes:
                    raise
                await self._write_one_by_one(outcomes)  # one bad outcome must not hold up the others
                deadline = self._deadline()
                take = functools.partial(self._claim, capacity=capacity, deadline=deadline)
                claims = await asyncio.to_thread(self.db.run, take) if looking else []
            if looking and self._found_all_due(capacity, claims):
                self._quiet_at = seen
            for claim in claims:
                self._spawn(claim.site, self._deliver(claim))
        return [t for t in self._tasks if t not in before]

    def _found_all_due(self, capacity: Mapping[str, int], claims: list[Claim]) -> bool:
        """Whether a claim took everything due: every site was asked (none skipped for its circuit or a full
        house) and came back with less than it asked for."""
        taken = Counter(c.site if c.site in self.connectors else None for c in claims)
        return (
            all(capacity.get(site, 0) > 0 for site in self.connectors)
            and all(taken[site] < limit for site, limit in capacity.items())
            and taken[None] < self.settings.batch_size
        )

    async def _write_one_by_one(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            try:
                await asyncio.to_thread(self.db.run, lambda s, o=outcome: self._write(s, [o], None))
            except Exception:  # left leased: the entry comes back after its lease and is found by its stamp
                log.exception("could not record a delivery's outcome")

    async def _flush(self) -> None:
        outcomes, self._outcomes = self._outcomes, []
        if outcomes:
            try:
                await asyncio.to_thread(self.db.run, lambda s: self._write(s, outcomes, None))
            except Exception:
                await self._write_one_by_one(outcomes)

    async def run_once(self) -> int:
        """One round: claim, deliver, wait for those deliveries and record them. Returns the entries claimed."""
        self._signals += 1  # always look: a round is asked for because there may be work
        started = await self._cycle()
        await asyncio.gather(*started, return_exceptions=True)
        await self._flush()
        return len(started)

    async def _probe(self, site: str) -> None:
        try:
            await self.connectors[site].health()
        except AntennaError as exc:
            self.health.failure(site, exc.detail, retry_after=rate_limit_wait(exc))
            self.metrics.connector_errors.labels(site, _kind(exc)).inc()
        else:
            self.health.success(site)

    async def _deliver(self, claim: Claim) -> None:
        """Call the site for one claim; what happened is queued as an outcome for the next transaction."""
        connector = self.connectors.get(claim.site)
        request, site_job_id = claim.request, claim.site_job_id
        if request is None:
            self._outcomes.append(functools.partial(self._finish, claim=claim, error="nothing to do"))
            return
        if connector is None:  # never claimed (see _claim); a site removed while this process runs
            return
        if not self.health.acquire(claim.site):  # the circuit opened after this entry was claimed
            self._outcomes.append(functools.partial(self._release, claim=claim))
            return
        # Whether the site may have the job whatever this delivery finds: an earlier attempt may have reached it.
        uncertain = claim.action == "submit" and (claim.attempts > 1 or claim.find_only)
        looking = submitting = False
        try:
            found: str | None = None
            # Never outlive the lease: another worker may take the entry once it expires.
            async with asyncio.timeout(max(0.0, claim.deadline - self.monotonic())):
                if claim.action == "submit":
                    if uncertain:  # never submit twice
                        self._check_lease(claim)
                        looking = True
                        found = await connector.find(account=request.account, job_id=request.job_id)
                        looking = uncertain = False  # looked up, and the lease is ours: nobody else submits it
                    if found is None and claim.find_only:
                        if claim.cancel_requested:
                            self._outcomes.append(functools.partial(self._not_at_site, claim=claim))
                        else:
                            self._outcomes.append(
                                functools.partial(
                                    self._retry_later, claim=claim, error="not found at the site yet", retry_after=0
                                )
                            )
                        return
                    if found is None:
                        self._check_lease(claim)
                        uncertain = submitting = True  # from here on the request may reach the site
                        found = await connector.submit(request)
                elif site_job_id is not None:
                    self._check_lease(claim)
                    await connector.cancel(account=request.account, site_job_id=site_job_id)
        except _LeaseLost:
            log.warning(
                "lease ran out before calling the site; left to its next holder", extra={"job_id": claim.job_id}
            )
            return
        except SiteRejected as exc:
            if looking:
                # A refused lookup says nothing about the job (a rotated key refuses every call): it may
                # still be at the site, so it is never voided for it.
                self._transient(claim, exc, uncertain=True)
            else:
                self._refused(claim, exc)
            return
        except (AntennaError, OSError, TimeoutError) as exc:
            if submitting and isinstance(exc, SiteUnavailable) and exc.not_sent:
                uncertain = False  # this request never left, and any earlier one was looked up first
            self._transient(claim, exc, uncertain=uncertain)
            return
        self.health.success(claim.site)
        self._outcomes.append(functools.partial(self._finish, claim=claim, site_job_id=found))
        self.metrics.forwarded.labels(claim.site, claim.action, "delivered").inc()

    def _refused(self, claim: Claim, exc: SiteRejected) -> None:
        """The site refused the submission (or the cancel) itself: final."""
        log.warning("site refused job", extra={"job_id": claim.job_id, "site": claim.site, "reason": exc.detail})
        if not isinstance(exc, SiteAuthFailed):
            # The site answered. A refusal of our credentials says nothing good about the site: a wrong
            # cluster key refuses everyone, so it must not close a circuit another failure opened.
            self.health.success(claim.site)
        self.metrics.forwarded.labels(claim.site, claim.action, "rejected").inc()
        self.metrics.connector_errors.labels(claim.site, exc.slug).inc()
        self._outcomes.append(functools.partial(self._reject, claim=claim, reason=exc.detail))

    def _check_lease(self, claim: Claim) -> None:
        if self.monotonic() >= claim.deadline:
            raise _LeaseLost

    def _transient(self, claim: Claim, exc: Exception, *, uncertain: bool) -> None:
        if isinstance(exc, AntennaError):
            detail = exc.detail
        elif isinstance(exc, TimeoutError):
            detail = f"{claim.site}: no answer within {self.lease.total_seconds() / 2:.0f} s"
        else:
            detail = f"{type(exc).__name__}: {exc}"
        wait = rate_limit_wait(exc)
        self.health.failure(claim.site, detail, retry_after=wait)
        self.metrics.connector_errors.labels(claim.site, _kind(exc)).inc()
        if claim.attempts >= self.settings.max_attempts and not claim.find_only:
            self.metrics.forwarded.labels(claim.site, claim.action, "gave_up").inc()
            reason = f"site unavailable after {claim.attempts} attempts: {detail}"
            if claim.action == "submit" and uncertain:
                log.error("submission lost: the site may have the job", extra={"job_id": claim.job_id})
                self._outcomes.append(functools.partial(self._lose, claim=claim, reason=f"{reason}; it may be there"))
                return
            log.error("forwarding gave up", extra={"job_id": claim.job_id, "site": claim.site})
            self._outcomes.append(functools.partial(self._reject, claim=claim, reason=reason))
            return
        self.metrics.forwarded.labels(claim.site, claim.action, "retry").inc()
        log.info("forwarding will retry", extra={"job_id": claim.job_id, "site": claim.site, "error": detail})
        if uncertain:  # the site may still be taking the request in: look it up only after it has had time
            wait = max(wait, self.settings.uncertain_retry_seconds)
        self._outcomes.append(functools.partial(self._retry_later, claim=claim, error=detail, retry_after=wait))

    def wake(self) -> None:
        """New work was just committed (e.g. by the submit route of this process, from any thread): look at
        once instead of at the next poll. Other replicas still find it within ``poll_seconds``."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._signal)

    def _listener_health(self, failure: Exception | None) -> None:
        """From the listener's thread: /readyz shows a listener that cannot listen (polling still forwards)."""
        if failure is None:
            self.supervisor.beat("outbox-listener")
        else:
            self.supervisor.failed("outbox-listener", failure)

    def _signal(self) -> None:
        self._signals += 1
        self._room.set()

    async def run_forever(self, stop: asyncio.Event, *, grace_seconds: float = 10.0) -> None:
        """Deliver continuously: new work is claimed as soon as a site has room, without waiting for slow sites."""
        self._loop = asyncio.get_running_loop()
        # Other replicas' submissions wake this one too (PostgreSQL); the poll below stays the safety net.
        if outbox.OutboxListener.applies_to(self.db.engine):
            # Registered before the listener's thread reports: /readyz iterates the loops meanwhile.
            self.supervisor.register("outbox-listener")
            self.listener = outbox.OutboxListener(
                self.db.engine, lambda _origin: self.wake(), origin=self.worker, on_health=self._listener_health
            )
            self.listener.start()
        try:
            await self._deliver_until(stop, grace_seconds)
        finally:
            if self.listener is not None:
                await asyncio.to_thread(self.listener.stop)

    async def _deliver_until(self, stop: asyncio.Event, grace_seconds: float) -> None:
        while not stop.is_set():
            self._room.clear()
            timeout = self.settings.poll_seconds
            try:
                await self._cycle()
            except Exception as exc:  # the database down, a bug: back off and go on; /readyz shows it
                timeout = self.supervisor.failed("forwarder", exc)
                self._signals += 1  # look again once backed off: what failed is still due
            else:
                self.supervisor.beat("forwarder")
            # Until a delivery ends, new work is woken in, or the poll interval passes.
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._room.wait())]
            if timeout > self.settings.poll_seconds:
                waits.pop()  # backing off: a delivery ending is no reason to try the database sooner
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not done:  # the poll: entries whose backoff or another worker's lease ran out meanwhile
                self._signals += 1
            for waiter in waits:
                waiter.cancel()
        if self._tasks:  # let deliveries in flight finish; the lease covers any cut short
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._flush()


def entry_done(session: Session, claim: Claim) -> bool:
    return session.get_one(OutboxEntry, claim.entry_id).done_at is not None


class _LeaseLost(Exception):
    """This worker's lease on a claim may have run out (the process was paused): do not call the site."""


def _kind(exc: BaseException) -> str:
    """The ``kind`` label of antenna_connector_errors."""
    if rate_limit_wait(exc):
        return "rate-limited"
    if isinstance(exc, AntennaError) and not isinstance(exc, SiteUnavailable):
        return exc.slug
    return "unavailable"

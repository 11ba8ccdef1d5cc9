"""The job service: validate → price → reserve → job row + outbox, in ONE transaction; list, show, cancel.

Object-level access lives here, not in the web layer: a job is visible to its owner and to the PIs of
its project; anything else is ``NotFound``, so the existence of other projects' jobs is not revealed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import and_, func, insert, inspect, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.billing import from_micro, to_micro
from gateway.clock import Clock
from gateway.db import Base, Database
from gateway.errors import (
    Conflict,
    Forbidden,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    RateLimited,
)
from gateway.identity import Principal
from gateway.jobs import outbox
from gateway.jobs.models import (
    AT_SITE_STATES,
    IdempotencyRecord,
    Job,
    JobEvent,
    JobState,
    OutboxEntry,
    ProjectSite,
    SiteAccount,
)
from gateway.jobs.spec import JobSpec, PricedJob, validate_and_price
from gateway.ledger import service as ledger
from gateway.settings import Settings

log = logging.getLogger("antenna.jobs")

_ACTIVE_STATES = [s.value for s in (JobState.ACCEPTED, *AT_SITE_STATES)]


@dataclass(frozen=True)
class JobView:
    id: str
    project: str
    site: str
    partition: str
    person: str
    name: str
    state: str
    unit: str
    reserved: Decimal
    charged: Decimal | None
    site_job_id: str | None
    exit_code: int | None
    reason: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    history: list[tuple[str, datetime, str]]


@dataclass(frozen=True)
class SubmitResult:
    job: JobView
    replayed: bool


@dataclass(frozen=True)
class JobPage:
    jobs: list[JobView]
    next_cursor: str | None


def request_hash(spec: JobSpec) -> str:
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class JobService:
    def __init__(self, *, db: Database, settings: Settings, clock: Clock, origin: str = "") -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.origin = origin  # names this process in outbox notifications (see gateway.jobs.outbox)

    # --- submit ---------------------------------------------------------------------------------

    def estimate(self, principal: Principal, spec: JobSpec) -> tuple[PricedJob, Decimal | None]:
        """The job priced as ``submit`` would price it, and what the project has available in its unit at the
        site now (None without an active allocation). Reserves nothing."""
        if not principal.is_member(spec.project):
            raise Forbidden(f"you are not a member of project {spec.project}")
        priced = validate_and_price(spec, self.settings)
        now = self.clock.now()
        balances = self.db.run(lambda s: ledger.balances(s, project=spec.project, site=spec.site))
        active = [b.available for b in balances if b.unit == priced.unit and b.is_active(now)]
        return priced, (active[0] if active else None)

    def submit(self, principal: Principal, spec: JobSpec, *, idempotency_key: str | None) -> SubmitResult:
        if not principal.is_member(spec.project):
            raise Forbidden(f"you are not a member of project {spec.project}")
        priced = validate_and_price(spec, self.settings)
        digest = request_hash(spec)  # the request as sent: a replay is recognised by what the person sent
        spec = priced.spec  # as it will run: the script's #SBATCH lines filled in

        def work(session: Session) -> SubmitResult:
            if idempotency_key is not None:
                replay = self._replay(session, principal.person, idempotency_key, digest)
                if replay is not None:
                    return replay
            # One round trip for the three facts the submission needs (each a scalar subquery).
            site_account, active, project_account = session.execute(
                select(
                    select(SiteAccount.account)
                    .where(SiteAccount.person == principal.person, SiteAccount.site == spec.site)
                    .scalar_subquery(),
                    select(func.count())
                    .select_from(Job)
                    .where(Job.person == principal.person, Job.state.in_(_ACTIVE_STATES))
                    .scalar_subquery(),
                    select(ProjectSite.project_account)
                    .where(ProjectSite.project == spec.project, ProjectSite.site == spec.site)
                    .scalar_subquery(),
                )
            ).one()
            if site_account is None:
                raise Forbidden(
                    f"you have no account mapped at {spec.site}; ask an operator to map yours", site=spec.site
                )
            if active >= self.settings.limits.max_active_jobs_per_person:
                raise RateLimited(
                    f"you have {active} active jobs; the limit is {self.settings.limits.max_active_jobs_per_person}",
                    retry_after=60,
                )
            now = self.clock.now()
            job_id = str(uuid.uuid4())
            ledger.reserve(
                session,
                job_id=job_id,
                project=spec.project,
                site=spec.site,
                unit=priced.unit,
                amount=priced.price,
                person=principal.person,
                at=now,
            )
            job = Job(
                id=job_id,
                project=spec.project,
                site=spec.site,
                partition=spec.partition,
                person=principal.person,
                name=spec.name,
                state=JobState.ACCEPTED.value,
                script=spec.script,
                spec={
                    **spec.model_dump(mode="json", exclude={"script"}),
                    "cores": priced.resources.cores,
                    "memory_gb": str(priced.resources.memory_gb),
                    "gpus": priced.resources.gpus,
                    "time_limit_minutes": priced.time_limit_minutes,
                },
                unit=priced.unit,
                price=to_micro(priced.price),
                site_account=site_account,
                project_account=project_account or spec.project,
                reason="",
                created_at=now,
                updated_at=now,
            )
            _add_new_job(
                session,
                job,
                JobEvent(job_id=job_id, state=JobState.ACCEPTED.value, at=now, detail="reserved"),
                OutboxEntry(job_id=job_id, site=spec.site, action="submit", available_at=now, created_at=now),
                self.origin,
            )
            if idempotency_key is not None:
                session.add(
                    IdempotencyRecord(
                        person=principal.person, key=idempotency_key, request_hash=digest, job_id=job_id, created_at=now
                    )
                )
            session.flush()
            # Everything the reply shows was just written: no need to read it back.
            return SubmitResult(_job_view(job, None, [(JobState.ACCEPTED.value, now, "reserved")]), replayed=False)

        try:
            return self.db.run(work)
        except IntegrityError:
            if idempotency_key is None:
                raise
            # A concurrent request with the same key won the race; answer as its replay.
            return self.db.run(lambda s: self._must_replay(s, principal.person, idempotency_key, digest))

    def _replay(self, session: Session, person: str, key: str, digest: str) -> SubmitResult | None:
        record = session.get(IdempotencyRecord, (person, key))
        if record is None:
            return None
        if record.request_hash != digest:
            raise IdempotencyConflict(
                "this Idempotency-Key was used with a different request body", field="Idempotency-Key"
            )
        return SubmitResult(self._view(session, session.get_one(Job, record.job_id)), replayed=True)

    def _must_replay(self, session: Session, person: str, key: str, digest: str) -> SubmitResult:
        replay = self._replay(session, person, key, digest)
        if replay is None:  # pragma: no cover - the integrity error had another cause
            raise Conflict("the submission conflicted with another; retry")
        return replay

    # --- read -----------------------------------------------------------------------------------

    def _visible(self, principal: Principal) -> object:
        pi_of = [p for p in principal.projects if principal.is_pi(p)]
        return or_(Job.person == principal.person, Job.project.in_(pi_of)) if pi_of else Job.person == principal.person

    def get(self, principal: Principal, job_id: str) -> JobView:
        def work(session: Session) -> JobView:
            job = session.get(Job, job_id)
            if job is None or not self._can_see(principal, job):
                raise NotFound(f"no job {job_id}")
            return self._view(session, job)

        return self.db.run(work)

    def find_visible(self, principal: Principal, job_id: str) -> Job:
        """The job row itself (for the output endpoint), with the same visibility rule."""

        def work(session: Session) -> Job:
            job = session.get(Job, job_id)
            if job is None or not self._can_see(principal, job):
                raise NotFound(f"no job {job_id}")
            return job

        return self.db.run(work)

    @staticmethod
    def _can_see(principal: Principal, job: Job) -> bool:
        return job.person == principal.person or principal.is_pi(job.project)

    def list_jobs(
        self,
        principal: Principal,
        *,
        project: str | None = None,
        site: str | None = None,
        state: str | None = None,
        id_prefix: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        def work(session: Session) -> JobPage:
            query = select(Job).where(self._visible(principal))  # type: ignore[arg-type]
            if project:
                query = query.where(Job.project == project)
            if site:
                query = query.where(Job.site == site)
            if state:
                query = query.where(Job.state == state)
            if id_prefix:
                query = query.where(Job.id.startswith(id_prefix, autoescape=True))
            if cursor:
                created, last_id = _decode_cursor(cursor)
                query = query.where(or_(Job.created_at < created, and_(Job.created_at == created, Job.id < last_id)))
            rows = session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)).all()
            page = rows[:limit]
            next_cursor = _encode_cursor(page[-1]) if len(rows) > limit else None
            settlements = ledger.reservations_of(session, [job.id for job in page])  # one read, not one per job
            return JobPage([_job_view(job, settlements.get(job.id), []) for job in page], next_cursor)

        return self.db.run(work)

    def _view(self, session: Session, job: Job) -> JobView:
        events = [
            (e.state, e.at, e.detail)
            for e in session.scalars(select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id))
        ]
        return _job_view(job, ledger.reservation_of(session, job.id), events)

    # --- cancel ---------------------------------------------------------------------------------

    def cancel(self, principal: Principal, job_id: str) -> JobView:
        """Cancel: a job not yet forwarded ends here (reservation voided); one at the site is asked to stop."""

        def work(session: Session) -> JobView:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None or not self._can_see(principal, job):
                raise NotFound(f"no job {job_id}")
            if JobState(job.state).is_final:
                raise Conflict(f"job {job_id} has already ended ({job.state})")
            now = self.clock.now()
            never_tried = job.state == JobState.ACCEPTED.value and _close_untried_submission(session, job_id, now)
            if job.site_job_id is None and not never_tried:
                # The submission is in flight, or an earlier attempt may have reached the site: the forwarder
                # finds it by its stamp and cancels it there, or, when the site never had it, voids it here.
                if job.cancel_requested_at is None:
                    job.cancel_requested_at = now
                    session.add(
                        JobEvent(
                            job_id=job_id,
                            state=job.state,
                            at=now,
                            detail=f"cancel requested by {principal.person}; looking the job up at the site first",
                        )
                    )
                session.execute(  # look now, not after the entry's backoff (unless a delivery holds it)
                    update(OutboxEntry)
                    .where(
                        OutboxEntry.job_id == job_id,
                        OutboxEntry.done_at.is_(None),
                        OutboxEntry.leased_until.is_(None) | (OutboxEntry.leased_until < now),
                    )
                    .values(available_at=now)
                )
            elif job.state == JobState.ACCEPTED.value:
                record_transition(session, job, JobState.CANCELLED, now, f"cancelled by {principal.person}")
                ledger.settle(
                    session,
                    job_id=job_id,
                    outcome="void",
                    at=now,
                    actor=principal.person,
                    reason="cancelled before forwarding",
                )
            else:
                outbox.queue(
                    session,
                    OutboxEntry(job_id=job_id, site=job.site, action="cancel", available_at=now, created_at=now),
                    origin=self.origin,
                )
                session.add(
                    JobEvent(job_id=job_id, state=job.state, at=now, detail=f"cancel requested by {principal.person}")
                )
            session.flush()
            return self._view(session, job)

        return self.db.run(work)

    def resolve(self, principal: Principal, job_id: str, *, charge: Decimal | None, reason: str) -> JobView:
        """An operator ends a ``lost`` job, or an unfinished job of a site retired from the configuration: charge
        ``charge`` (what the site's own records say it ran), or void it (``charge`` None). Recorded in the
        ledger's journal with the operator and the reason."""
        if not principal.has_role("antenna-operator"):
            raise Forbidden("resolving a lost job needs the antenna-operator role")
        if not reason.strip():
            raise InvalidRequest("say why: the reason is kept in the ledger's journal", field="reason")

        def work(session: Session) -> JobView:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None:
                raise NotFound(f"no job {job_id}")
            retired = job.site not in self.settings.sites and not JobState(job.state).is_final
            if job.state != JobState.LOST.value and not retired:
                raise Conflict(
                    f"job {job_id} is {job.state}: only a lost job, or an unfinished job of a site no longer "
                    "configured, is resolved by hand"
                )
            now = self.clock.now()
            session.execute(  # stop looking for it
                update(OutboxEntry)
                .where(OutboxEntry.job_id == job_id, OutboxEntry.done_at.is_(None))
                .values(done_at=now, leased_until=None, last_error=f"resolved by {principal.person}"[:500])
            )
            how = f"charged {charge}" if charge is not None else "voided"
            record_transition(session, job, JobState.RESOLVED, now, f"resolved by {principal.person}: {how}; {reason}")
            ledger.settle(
                session,
                job_id=job_id,
                outcome="charge" if charge is not None else "void",
                amount=charge or Decimal(0),
                at=now,
                actor=principal.person,
                reason=f"lost job resolved: {reason}"[:500],
            )
            session.flush()
            return self._view(session, job)

        return self.db.run(work)

    # --- people and projects --------------------------------------------------------------------

    def site_accounts(self, person: str) -> dict[str, str]:
        def work(session: Session) -> dict[str, str]:
            rows = session.scalars(select(SiteAccount).where(SiteAccount.person == person)).all()
            return {row.site: row.account for row in rows}

        return self.db.run(work)

    def map_account(self, principal: Principal, *, person: str, site: str, account: str) -> None:
        if not principal.has_role("antenna-operator"):
            raise Forbidden("mapping site accounts needs the antenna-operator role")
        if site not in self.settings.sites:
            raise NotFound(f"no site {site}")

        def work(session: Session) -> None:
            now = self.clock.now()
            row = session.get(SiteAccount, (person.lower(), site))
            if row is None:
                session.add(
                    SiteAccount(
                        person=person.lower(), site=site, account=account, updated_by=principal.person, updated_at=now
                    )
                )
            else:
                row.account, row.updated_by, row.updated_at = account, principal.person, now

        self.db.run(work)

    def allocate(
        self,
        principal: Principal,
        *,
        project: str,
        site: str,
        unit: str,
        amount: Decimal,
        start: datetime,
        end: datetime,
        project_account: str | None,
        reason: str,
    ) -> ledger.Balance:
        if not principal.has_role("antenna-quota-admin"):
            raise Forbidden("changing allocations needs the antenna-quota-admin role")
        site_settings = self.settings.site(site)
        if site_settings is None:
            raise NotFound(f"no site {site}")
        if unit not in site_settings.units():
            raise InvalidRequest(f"site {site} bills in {', '.join(sorted(site_settings.units()))}", field="unit")

        def work(session: Session) -> ledger.Balance:
            if project_account:
                row = session.get(ProjectSite, (project, site))
                if row is None:
                    session.add(ProjectSite(project=project, site=site, project_account=project_account))
                else:
                    row.project_account = project_account
            return ledger.set_allocation(
                session,
                project=project,
                site=site,
                unit=unit,
                amount=amount,
                start=start,
                end=end,
                actor=principal.person,
                reason=reason or "allocation set",
                at=self.clock.now(),
            )

        return self.db.run(work)

    def balances(self, principal: Principal, project: str) -> list[ledger.Balance]:
        self._require_project_reader(principal, project)
        return self.db.run(lambda s: ledger.balances(s, project=project))

    def usage(
        self,
        principal: Principal,
        project: str,
        *,
        site: str | None = None,
        person: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        period_start: datetime | None = None,
    ) -> list[ledger.UsageLine]:
        """Members see their own usage; PIs and quota admins see everyone's in the project, or one person's."""
        self._require_project_reader(principal, project)
        everyone = principal.is_pi(project) or principal.has_role("antenna-quota-admin")
        if not everyone:
            if person not in (None, principal.person):
                raise Forbidden("members see their own usage only; the project's PI sees everyone's")
            person = principal.person
        return self.db.run(
            lambda s: ledger.usage(
                s, project=project, site=site, person=person, start=start, end=end, period_start=period_start
            )
        )

    @staticmethod
    def _require_project_reader(principal: Principal, project: str) -> None:
        if not (principal.is_member(project) or principal.has_role("antenna-quota-admin")):
            raise NotFound(f"no project {project}")


def _add_new_job(session: Session, job: Job, event: JobEvent, entry: OutboxEntry, origin: str) -> None:
    """Write a new job, its first event and its outbox entry, and wake the forwarders once it commits."""
    if session.get_bind().dialect.name != "postgresql":
        session.add(job)
        session.flush()  # the job's row before the rows that refer to it
        session.add(event)
        outbox.queue(session, entry, origin=origin)
        return
    # One round trip instead of four: the three INSERTs as data-modifying CTEs of the NOTIFY's SELECT.
    # PostgreSQL checks the foreign keys at the end of the statement, when the job's row exists.
    inserts = [
        insert(Base.metadata.tables[row.__tablename__]).values(_column_values(row)).cte(f"new_{row.__tablename__}")
        for row in (job, event, entry)
    ]
    session.execute(select(func.pg_notify(outbox.CHANNEL, origin)).add_cte(*inserts))


def _close_untried_submission(session: Session, job_id: str, now: datetime) -> bool:
    """Close the job's submission if no forwarder ever claimed it, so it cannot have reached the site.

    A claim commits its lease and attempt before calling the site, so this conditional write and a claim
    never both win: whichever commits second finds the row changed."""
    closed = session.execute(
        update(OutboxEntry)
        .where(
            OutboxEntry.job_id == job_id,
            OutboxEntry.done_at.is_(None),
            OutboxEntry.attempts == 0,
            OutboxEntry.leased_until.is_(None),
        )
        .values(done_at=now, last_error="cancelled before forwarding")
    )
    return bool(closed.rowcount > 0)  # type: ignore[attr-defined]


def _column_values(row: Base) -> dict[str, object]:
    """The columns set on a new ORM object; the others take their defaults in the INSERT."""
    given = inspect(row).dict
    return {c.key: given[c.key] for c in inspect(type(row)).column_attrs if c.key in given}


def _job_view(job: Job, settlement: ledger.Settlement | None, history: list[tuple[str, datetime, str]]) -> JobView:
    return JobView(
        id=job.id,
        project=job.project,
        site=job.site,
        partition=job.partition,
        person=job.person,
        name=job.name,
        state=job.state,
        unit=job.unit,
        reserved=from_micro(job.price),
        charged=settlement.charged + settlement.overrun if settlement and settlement.state != "pending" else None,
        site_job_id=job.site_job_id,
        exit_code=job.exit_code,
        reason=job.reason,
        created_at=job.created_at,
        started_at=job.started_at,
        ended_at=job.ended_at,
        history=history,
    )


def record_transition(session: Session, job: Job, state: JobState, at: datetime, detail: str = "") -> bool:
    """Move a job to ``state`` and log it in its history. Returns False when it already was there."""
    if job.state == state.value:
        return False
    job.state = state.value
    job.updated_at = at
    if state == JobState.RUNNING and job.started_at is None:
        job.started_at = at
    if state.is_final and job.ended_at is None:
        job.ended_at = at
    if detail:
        job.reason = detail[:500]
    session.add(JobEvent(job_id=job.id, state=state.value, at=at, detail=detail[:500]))
    # Every state change of every job passes here (forwarder, status sync, cancel): one audit line each.
    log.info(
        "job state changed",
        extra={"job_id": job.id, "project": job.project, "site": job.site, "person": job.person, "state": state.value},
    )
    return True


def _encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    refused = InvalidRequest("the cursor is not one this API gave out", field="cursor")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, job_id = json.loads(base64.urlsafe_b64decode(padded))
        at = datetime.fromisoformat(created)
    except (ValueError, TypeError) as exc:
        raise refused from exc
    if at.tzinfo is None:  # every cursor we give out carries its offset
        raise refused
    return at, str(job_id)


def active_site_jobs(session: Session, site: str) -> Sequence[Job]:
    """The jobs at ``site`` whose state the sync follows: those running or queued there, and the lost ones it
    knows a site job id of (they may turn up again)."""
    watched = [s.value for s in (*AT_SITE_STATES, JobState.LOST)]
    return session.scalars(
        select(Job).where(Job.site == site, Job.state.in_(watched), Job.site_job_id.is_not(None))
    ).all()

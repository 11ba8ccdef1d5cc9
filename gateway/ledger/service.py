"""Ledger operations. Each takes the caller's session (one transaction) and never talks to a site.

Dating rule: an entry is dated inside its account's period, always. Reservations and grants happen at
``at`` (a reservation outside the period is refused); settlements of a reservation are booked to the
period that holds it, dated at ``at`` or, if the period has closed meanwhile, at its last instant
(accrual: the job was admitted against that period, so that period pays).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, NoReturn

from sqlalchemy import and_, case, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from gateway.billing import from_micro, to_micro
from gateway.errors import (
    Conflict,
    InvalidRequest,
    LedgerInvariantBroken,
    NoActiveAllocation,
    NotFound,
    QuotaExceeded,
)
from gateway.ledger.models import (
    AccountKind,
    EntryKind,
    Layer,
    LedgerAccount,
    LedgerEntry,
    Reservation,
    ReservationState,
)

#: Counterparty accounts span all time.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
END_OF_TIME = datetime(9999, 1, 1, tzinfo=UTC)
_LAST_INSTANT = timedelta(microseconds=1)

Outcome = Literal["charge", "release", "void"]


@dataclass(frozen=True)
class Balance:
    project: str
    site: str
    unit: str
    period_start: datetime
    period_end: datetime
    granted: Decimal
    reserved: Decimal
    charged: Decimal
    overrun: Decimal

    @property
    def available(self) -> Decimal:
        return self.granted - self.reserved - self.charged

    def is_active(self, at: datetime) -> bool:
        return self.period_start <= at < self.period_end


@dataclass(frozen=True)
class ReservationResult:
    job_id: str
    amount: Decimal
    unit: str
    period_start: datetime
    replayed: bool


@dataclass(frozen=True)
class Settlement:
    job_id: str
    state: ReservationState
    reserved: Decimal
    charged: Decimal
    overrun: Decimal
    replayed: bool

    @property
    def released(self) -> Decimal:
        return self.reserved - self.charged


@dataclass(frozen=True)
class UsageLine:
    job_id: str | None
    person: str | None
    project: str
    site: str
    unit: str
    period_start: datetime
    kind: str
    amount: Decimal
    effective_at: datetime


# --- accounts -------------------------------------------------------------------------------------


def _insert_ignore(session: Session, values: dict[str, Any]) -> None:
    """Insert an account unless one with the same identity exists (safe under concurrent creators)."""
    dialect = session.get_bind().dialect.name
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(LedgerAccount).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(LedgerAccount).values(**values).on_conflict_do_nothing()
    else:  # pragma: no cover - only the two supported backends
        stmt = insert(LedgerAccount).values(**values)
    session.execute(stmt)


def _account(
    session: Session,
    *,
    kind: AccountKind,
    project: str,
    site: str,
    unit: str,
    start: datetime,
    end: datetime,
) -> LedgerAccount:
    identity = {
        "kind": kind.value,
        "project": project,
        "site": site,
        "unit": unit,
        "period_start": start,
    }
    found = session.scalars(select(LedgerAccount).filter_by(**identity)).first()
    if found is not None:
        return found
    _insert_ignore(
        session,
        {
            **identity,
            "period_end": end,
            "granted": 0,
            "reserved": 0,
            "charged": 0,
            "created_at": datetime.now(UTC),
        },
    )
    return session.scalars(select(LedgerAccount).filter_by(**identity)).one()


def _counterparty(session: Session, kind: AccountKind, site: str, unit: str) -> LedgerAccount:
    return _account(session, kind=kind, project="", site=site, unit=unit, start=EPOCH, end=END_OF_TIME)


def _overrun_account(session: Session, allocation: LedgerAccount) -> LedgerAccount:
    return _account(
        session,
        kind=AccountKind.OVERRUN,
        project=allocation.project,
        site=allocation.site,
        unit=allocation.unit,
        start=allocation.period_start,
        end=allocation.period_end,
    )


def _dated_in(account: LedgerAccount, at: datetime) -> datetime:
    return max(account.period_start, min(at, account.period_end - _LAST_INSTANT))


def _entry(
    session: Session,
    *,
    key: str,
    kind: EntryKind,
    layer: Layer,
    debit: LedgerAccount,
    credit: LedgerAccount,
    amount: int,
    at: datetime,
    effective_at: datetime,
    actor: str,
    reason: str,
    job_id: str | None = None,
    person: str | None = None,
) -> None:
    session.add(
        LedgerEntry(
            key=key,
            kind=kind.value,
            layer=layer.value,
            debit_account_id=debit.id,
            credit_account_id=credit.id,
            amount=amount,
            job_id=job_id,
            person=person,
            actor=actor,
            reason=reason[:500],
            effective_at=effective_at,
            recorded_at=at,
        )
    )


# --- allocations ----------------------------------------------------------------------------------


def set_allocation(
    session: Session,
    *,
    project: str,
    site: str,
    unit: str,
    amount: Decimal,
    start: datetime,
    end: datetime,
    actor: str,
    reason: str,
    at: datetime,
) -> Balance:
    """Grant, top up, shorten or end the allocation of ``project`` at ``site`` for the period ``start``.

    The amount is absolute: the difference to the current grant is booked as a grant or a revocation.
    A revocation never takes the grant below what is reserved plus charged (Conflict otherwise), so jobs
    already admitted stay covered. Moving ``end`` earlier is allowed back to the last entry's date.
    """
    if amount < 0:
        raise InvalidRequest("an allocation cannot be negative", field="amount")
    if start >= end:
        raise InvalidRequest("the period must end after it starts", field="end")
    target = to_micro(amount)
    account = session.scalars(
        select(LedgerAccount).filter_by(
            kind=AccountKind.ALLOCATION.value,
            project=project,
            site=site,
            unit=unit,
            period_start=start,
        )
    ).first()
    _refuse_overlap(
        session,
        project=project,
        site=site,
        unit=unit,
        start=start,
        end=end,
        except_id=account.id if account else None,
    )
    if account is None:
        if end <= at:
            raise InvalidRequest("a new allocation must end in the future", field="end")
        account = _account(
            session,
            kind=AccountKind.ALLOCATION,
            project=project,
            site=site,
            unit=unit,
            start=start,
            end=end,
        )
    elif end != account.period_end:
        last = session.scalar(
            select(func.max(LedgerEntry.effective_at)).where(
                or_(
                    LedgerEntry.debit_account_id == account.id,
                    LedgerEntry.credit_account_id == account.id,
                )
            )
        )
        if last is not None and end <= last:
            raise Conflict(f"the period cannot end before its last entry ({last.isoformat()})", field="end")
        account.period_end = end
        _overrun_end(session, account)
        session.flush()
    _regrant(session, account, target - account.granted, actor=actor, reason=reason, at=at)
    return _balance(session, account)


def top_up(
    session: Session,
    *,
    project: str,
    site: str,
    unit: str,
    amount: Decimal,
    actor: str,
    reason: str,
    at: datetime,
) -> Balance:
    """Add ``amount`` (negative to reduce) to the allocation active at ``at``, without a read-modify-write race."""
    account = _active_allocation(session, project=project, site=site, unit=unit, at=at)
    if account is None:
        raise NoActiveAllocation(f"project {project} has no active {unit} allocation at {site}")
    _regrant(session, account, to_micro(amount), actor=actor, reason=reason, at=at)
    return _balance(session, account)


def _overrun_end(session: Session, account: LedgerAccount) -> None:
    session.execute(
        update(LedgerAccount)
        .where(
            LedgerAccount.kind == AccountKind.OVERRUN.value,
            LedgerAccount.project == account.project,
            LedgerAccount.site == account.site,
            LedgerAccount.unit == account.unit,
            LedgerAccount.period_start == account.period_start,
        )
        .values(period_end=account.period_end)
    )


def _refuse_overlap(
    session: Session,
    *,
    project: str,
    site: str,
    unit: str,
    start: datetime,
    end: datetime,
    except_id: int | None,
) -> None:
    query = select(LedgerAccount).where(
        LedgerAccount.kind == AccountKind.ALLOCATION.value,
        LedgerAccount.project == project,
        LedgerAccount.site == site,
        LedgerAccount.unit == unit,
        LedgerAccount.period_start < end,
        LedgerAccount.period_end > start,
    )
    if except_id is not None:
        query = query.where(LedgerAccount.id != except_id)
    other = session.scalars(query).first()
    if other is not None:
        raise Conflict(
            f"the period overlaps the allocation {other.period_start.isoformat()} to {other.period_end.isoformat()}",
            field="start",
        )


def _regrant(session: Session, account: LedgerAccount, delta: int, *, actor: str, reason: str, at: datetime) -> None:
    if delta == 0:
        return
    allocator = _counterparty(session, AccountKind.ALLOCATOR, account.site, account.unit)
    if delta > 0:
        session.execute(
            update(LedgerAccount).where(LedgerAccount.id == account.id).values(granted=LedgerAccount.granted + delta)
        )
        kind, debit, credit = EntryKind.GRANT, allocator, account
    else:
        done = session.execute(
            update(LedgerAccount)
            .where(
                LedgerAccount.id == account.id,
                LedgerAccount.granted - LedgerAccount.reserved - LedgerAccount.charged >= -delta,
            )
            .values(granted=LedgerAccount.granted + delta)
            .returning(LedgerAccount.id)
        ).first()
        if done is None:
            session.refresh(account)
            committed = from_micro(account.reserved + account.charged)
            raise Conflict(
                f"the grant cannot go below what is reserved and charged ({committed} {account.unit})",
                field="amount",
                minimum=str(committed),
            )
        kind, debit, credit = EntryKind.REVOKE, account, allocator
    _entry(
        session,
        key=f"{kind.value}:{account.id}:{uuid.uuid4()}",
        kind=kind,
        layer=Layer.POSTED,
        debit=debit,
        credit=credit,
        amount=abs(delta),
        at=at,
        effective_at=_dated_in(account, at),
        actor=actor,
        reason=reason,
    )
    session.flush()
    session.refresh(account)


def _active_allocation(session: Session, *, project: str, site: str, unit: str, at: datetime) -> LedgerAccount | None:
    return session.scalars(
        select(LedgerAccount).where(
            LedgerAccount.kind == AccountKind.ALLOCATION.value,
            LedgerAccount.project == project,
            LedgerAccount.site == site,
            LedgerAccount.unit == unit,
            LedgerAccount.period_start <= at,
            LedgerAccount.period_end > at,
        )
    ).first()


# --- reservations and settlement ------------------------------------------------------------------


def reserve(
    session: Session,
    *,
    job_id: str,
    project: str,
    site: str,
    unit: str,
    amount: Decimal,
    person: str,
    at: datetime,
) -> ReservationResult:
    """Reserve ``amount`` for ``job_id`` if and only if the active allocation can cover it.

    One conditional UPDATE: the availability test and the write are one statement, so concurrent
    reservations (threads, processes, replicas) can never overdraw; no lock outlives the transaction.
    Replaying the same job id returns the original reservation.
    """
    existing = session.get(Reservation, job_id)
    if existing is not None:
        return _reservation_result(session, existing, replayed=True)
    micro = to_micro(amount)
    if micro <= 0:
        raise InvalidRequest("a job must cost something to reserve", field="time_limit")
    active = (
        select(LedgerAccount.id)
        .where(
            LedgerAccount.kind == AccountKind.ALLOCATION.value,
            LedgerAccount.project == project,
            LedgerAccount.site == site,
            LedgerAccount.unit == unit,
            LedgerAccount.period_start <= at,
            LedgerAccount.period_end > at,
        )
        .limit(1)
        .scalar_subquery()
    )
    row = session.execute(
        update(LedgerAccount)
        .where(
            LedgerAccount.id == active,
            LedgerAccount.granted - LedgerAccount.reserved - LedgerAccount.charged >= micro,
        )
        .values(reserved=LedgerAccount.reserved + micro)
        .returning(LedgerAccount.id)
    ).first()
    if row is None:
        _explain_refusal(session, project=project, site=site, unit=unit, amount=amount, at=at)
    account = session.get_one(LedgerAccount, row[0])
    usage = _counterparty(session, AccountKind.USAGE, site, unit)
    _entry(
        session,
        key=f"reserve:{job_id}",
        kind=EntryKind.RESERVE,
        layer=Layer.PENDING,
        debit=account,
        credit=usage,
        amount=micro,
        at=at,
        effective_at=at,
        actor=person,
        reason="job accepted",
        job_id=job_id,
        person=person,
    )
    session.add(Reservation(job_id=job_id, account_id=account.id, person=person, amount=micro, created_at=at))
    session.flush()
    return ReservationResult(job_id, from_micro(micro), unit, account.period_start, replayed=False)


def _explain_refusal(
    session: Session, *, project: str, site: str, unit: str, amount: Decimal, at: datetime
) -> NoReturn:
    account = _active_allocation(session, project=project, site=site, unit=unit, at=at)
    if account is None:
        raise NoActiveAllocation(
            f"project {project} has no active {unit} allocation at {site}",
            project=project,
            site=site,
            unit=unit,
        )
    available = from_micro(account.granted - account.reserved - account.charged)
    raise QuotaExceeded(
        f"the job costs {amount} {unit} but project {project} has {available} {unit} available at {site}",
        available=available,
        price=amount,
        unit=unit,
    )


def _reservation_result(session: Session, res: Reservation, *, replayed: bool) -> ReservationResult:
    account = session.get_one(LedgerAccount, res.account_id)
    return ReservationResult(res.job_id, from_micro(res.amount), account.unit, account.period_start, replayed)


def settle(
    session: Session,
    *,
    job_id: str,
    outcome: Outcome,
    amount: Decimal = Decimal(0),
    at: datetime,
    actor: str = "gateway",
    reason: str = "",
) -> Settlement:
    """End the job's reservation exactly once: charge ``amount``, release it unused, or void it.

    The pending reservation is reversed whole; the charge is posted up to the reserved amount and any
    excess is posted to the project's overrun account (never silently). Replaying a settlement of a
    job already settled changes nothing and returns the original result with ``replayed=True``.
    """
    res = session.get(Reservation, job_id, with_for_update=True)
    if res is None:
        raise NotFound(f"no reservation for job {job_id}")
    if res.state != ReservationState.PENDING:
        return _settlement(res, replayed=True)
    actual = to_micro(amount) if outcome == "charge" else 0
    if actual < 0:
        raise InvalidRequest("a charge cannot be negative", field="amount")
    charged = min(actual, res.amount)
    overrun = actual - charged
    state = {
        "charge": ReservationState.CHARGED,
        "release": ReservationState.RELEASED,
        "void": ReservationState.VOIDED,
    }[outcome]
    closed = session.execute(
        update(Reservation)
        .where(Reservation.job_id == job_id, Reservation.state == ReservationState.PENDING.value)
        .values(state=state.value, charged=charged, overrun=overrun, closed_at=at)
        .returning(Reservation.job_id)
    ).first()
    if closed is None:  # settled by a concurrent transaction between our read and write
        session.refresh(res)
        return _settlement(res, replayed=True)
    account = session.get_one(LedgerAccount, res.account_id)
    usage = _counterparty(session, AccountKind.USAGE, account.site, account.unit)
    dated = _dated_in(account, at)
    book = functools.partial(_entry, session, at=at, effective_at=dated, actor=actor, job_id=job_id, person=res.person)
    book(
        key=f"close:{job_id}",
        kind=EntryKind.VOID if outcome == "void" else EntryKind.RELEASE,
        layer=Layer.PENDING,
        debit=usage,
        credit=account,
        amount=res.amount,
        reason=reason or f"reservation {state.value}",
    )
    if charged:
        book(
            key=f"charge:{job_id}",
            kind=EntryKind.CHARGE,
            layer=Layer.POSTED,
            debit=account,
            credit=usage,
            amount=charged,
            reason=reason or "usage",
        )
    session.execute(
        update(LedgerAccount)
        .where(LedgerAccount.id == account.id)
        .values(reserved=LedgerAccount.reserved - res.amount, charged=LedgerAccount.charged + charged)
    )
    if overrun:
        debt = _overrun_account(session, account)
        book(
            key=f"overrun:{job_id}",
            kind=EntryKind.OVERRUN,
            layer=Layer.POSTED,
            debit=debt,
            credit=usage,
            amount=overrun,
            reason=reason or "usage above the reservation",
        )
        session.execute(
            update(LedgerAccount).where(LedgerAccount.id == debt.id).values(charged=LedgerAccount.charged + overrun)
        )
    session.flush()
    session.refresh(res)
    return _settlement(res, replayed=False)


def _settlement(res: Reservation, *, replayed: bool) -> Settlement:
    return Settlement(
        job_id=res.job_id,
        state=ReservationState(res.state),
        reserved=from_micro(res.amount),
        charged=from_micro(res.charged),
        overrun=from_micro(res.overrun),
        replayed=replayed,
    )


def reservation_of(session: Session, job_id: str) -> Settlement | None:
    res = session.get(Reservation, job_id)
    return None if res is None else _settlement(res, replayed=False)


# --- reading --------------------------------------------------------------------------------------


def _balance(session: Session, account: LedgerAccount) -> Balance:
    session.refresh(account)
    overrun = session.scalar(
        select(LedgerAccount.charged).filter_by(
            kind=AccountKind.OVERRUN.value,
            project=account.project,
            site=account.site,
            unit=account.unit,
            period_start=account.period_start,
        )
    )
    return Balance(
        project=account.project,
        site=account.site,
        unit=account.unit,
        period_start=account.period_start,
        period_end=account.period_end,
        granted=from_micro(account.granted),
        reserved=from_micro(account.reserved),
        charged=from_micro(account.charged),
        overrun=from_micro(overrun or 0),
    )


def balances(session: Session, *, project: str, site: str | None = None) -> list[Balance]:
    """Every allocation period of ``project`` (optionally at one site), oldest first."""
    query = select(LedgerAccount).where(
        LedgerAccount.kind == AccountKind.ALLOCATION.value, LedgerAccount.project == project
    )
    if site is not None:
        query = query.where(LedgerAccount.site == site)
    accounts = session.scalars(query.order_by(LedgerAccount.site, LedgerAccount.unit, LedgerAccount.period_start))
    return [_balance(session, account) for account in accounts.all()]


def all_balances(session: Session) -> list[Balance]:
    """Every allocation account, for metrics and reconciliation."""
    projects = session.scalars(
        select(LedgerAccount.project).where(LedgerAccount.kind == AccountKind.ALLOCATION.value).distinct()
    ).all()
    return [b for project in projects for b in balances(session, project=project)]


def usage(
    session: Session,
    *,
    project: str,
    site: str | None = None,
    person: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[UsageLine]:
    """Posted charges and overruns of a project, one line per entry, filtered."""
    account = aliased(LedgerAccount)
    query = (
        select(LedgerEntry, account)
        .join(account, LedgerEntry.debit_account_id == account.id)
        .where(
            account.project == project,
            account.kind.in_([AccountKind.ALLOCATION.value, AccountKind.OVERRUN.value]),
            LedgerEntry.kind.in_([EntryKind.CHARGE.value, EntryKind.OVERRUN.value]),
        )
    )
    if site is not None:
        query = query.where(account.site == site)
    if person is not None:
        query = query.where(LedgerEntry.person == person)
    if start is not None:
        query = query.where(LedgerEntry.effective_at >= start)
    if end is not None:
        query = query.where(LedgerEntry.effective_at < end)
    rows = session.execute(query.order_by(LedgerEntry.effective_at, LedgerEntry.id)).all()
    return [
        UsageLine(
            job_id=entry.job_id,
            person=entry.person,
            project=acc.project,
            site=acc.site,
            unit=acc.unit,
            period_start=acc.period_start,
            kind=entry.kind,
            amount=from_micro(entry.amount),
            effective_at=entry.effective_at,
        )
        for entry, acc in rows
    ]


# --- invariants -----------------------------------------------------------------------------------


def derived_balance(session: Session, account_id: int) -> tuple[int, int, int]:
    """(granted, reserved, charged) of an account recomputed from its entries alone."""
    counterpart = aliased(LedgerAccount)
    is_debit = LedgerEntry.debit_account_id == account_id
    other_id = case((is_debit, LedgerEntry.credit_account_id), else_=LedgerEntry.debit_account_id)
    signed = case((is_debit, LedgerEntry.amount), else_=-LedgerEntry.amount)
    rows = session.execute(
        select(LedgerEntry.layer, counterpart.kind, func.coalesce(func.sum(signed), 0))
        .join(counterpart, counterpart.id == other_id)
        .where(
            or_(
                LedgerEntry.debit_account_id == account_id,
                LedgerEntry.credit_account_id == account_id,
            )
        )
        .group_by(LedgerEntry.layer, counterpart.kind)
    ).all()
    granted = reserved = charged = 0
    for layer, other_kind, debit_minus_credit in rows:
        value = int(debit_minus_credit)
        if layer == Layer.PENDING.value:
            reserved += value
        elif other_kind == AccountKind.ALLOCATOR.value:
            granted -= value
        else:
            charged += value
    return granted, reserved, charged


def check_invariants(session: Session) -> list[str]:
    """Every broken invariant, as sentences. Empty when the ledger is sound."""
    problems: list[str] = []
    accounts = session.scalars(
        select(LedgerAccount).where(LedgerAccount.kind.in_([AccountKind.ALLOCATION.value, AccountKind.OVERRUN.value]))
    ).all()
    pending: dict[int, int] = {
        account_id: int(total)
        for account_id, total in session.execute(
            select(Reservation.account_id, func.sum(Reservation.amount))
            .where(Reservation.state == ReservationState.PENDING.value)
            .group_by(Reservation.account_id)
        )
    }
    for acc in accounts:
        name = f"{acc.kind} {acc.project}@{acc.site}/{acc.unit} from {acc.period_start.isoformat()}"
        derived = derived_balance(session, acc.id)
        if acc.kind == AccountKind.OVERRUN.value:
            if derived != (0, 0, acc.charged):
                problems.append(f"{name}: cached overrun {acc.charged} != entries {derived}")
            continue
        if derived != (acc.granted, acc.reserved, acc.charged):
            problems.append(f"{name}: cached {(acc.granted, acc.reserved, acc.charged)} != entries {derived}")
        if acc.reserved < 0 or acc.charged < 0 or acc.reserved + acc.charged > acc.granted:
            problems.append(f"{name}: reserved {acc.reserved} + charged {acc.charged} exceeds granted {acc.granted}")
        if int(pending.get(acc.id, 0)) != acc.reserved:
            problems.append(f"{name}: reserved {acc.reserved} != open reservations {pending.get(acc.id, 0)}")
    outside = session.scalar(
        select(func.count())
        .select_from(LedgerEntry)
        .join(
            LedgerAccount,
            or_(
                LedgerAccount.id == LedgerEntry.debit_account_id,
                LedgerAccount.id == LedgerEntry.credit_account_id,
            ),
        )
        .where(
            LedgerAccount.kind == AccountKind.ALLOCATION.value,
            or_(
                LedgerEntry.effective_at < LedgerAccount.period_start,
                LedgerEntry.effective_at >= LedgerAccount.period_end,
            ),
        )
    )
    if outside:
        problems.append(f"{outside} entries are dated outside their allocation period")
    problems.extend(_reservation_problems(session))
    return problems


def _reservation_problems(session: Session) -> list[str]:
    problems = []
    opened = (
        select(LedgerEntry.job_id, func.count().label("n"))
        .where(LedgerEntry.kind == EntryKind.RESERVE.value)
        .group_by(LedgerEntry.job_id)
        .subquery()
    )
    closed = (
        select(LedgerEntry.job_id, func.count().label("n"))
        .where(LedgerEntry.kind.in_([EntryKind.RELEASE.value, EntryKind.VOID.value]))
        .group_by(LedgerEntry.job_id)
        .subquery()
    )
    rows = session.execute(
        select(Reservation.job_id, Reservation.state, opened.c.n, closed.c.n)
        .outerjoin(opened, opened.c.job_id == Reservation.job_id)
        .outerjoin(closed, closed.c.job_id == Reservation.job_id)
        .where(
            or_(
                func.coalesce(opened.c.n, 0) != 1,
                and_(
                    Reservation.state == ReservationState.PENDING.value,
                    func.coalesce(closed.c.n, 0) != 0,
                ),
                and_(
                    Reservation.state != ReservationState.PENDING.value,
                    func.coalesce(closed.c.n, 0) != 1,
                ),
            )
        )
    ).all()
    for job_id, state, n_open, n_close in rows:
        problems.append(
            f"reservation of job {job_id} ({state}) has {n_open or 0} reserve and {n_close or 0} close entries"
        )
    return problems


def assert_invariants(session: Session) -> None:
    problems = check_invariants(session)
    if problems:
        raise LedgerInvariantBroken("; ".join(problems[:10]), count=len(problems))


def open_reservations(session: Session, *, older_than: datetime | None = None) -> Sequence[str]:
    query = select(Reservation.job_id).where(Reservation.state == ReservationState.PENDING.value)
    if older_than is not None:
        query = query.where(Reservation.created_at < older_than)
    return session.scalars(query).all()

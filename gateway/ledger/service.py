"""Ledger operations. Each takes the caller's session (one transaction) and never talks to a site.

Dating rule: an entry is dated inside its account's period, always. Reservations happen at ``at`` (a
reservation outside the period is refused); grants and settlements are dated at ``at`` clamped into the
period that holds them: a settlement after the period closed is dated at its last instant (accrual: the
job was admitted against that period, so that period pays).

Locking: a reservation is ONE conditional UPDATE of the allocation row. On PostgreSQL it runs at COMMIT
(deferred constraint trigger, see the first migration), so a hot allocation row is locked only while the
commit is written, never across a round trip or the rest of the caller's transaction; on SQLite the
transaction holds the database lock from BEGIN IMMEDIATE. Settlements and admin operations first apply
the transaction's pending reservations, then lock in the order reservation -> allocation -> overrun
account; admin operations first take the (site, unit) allocator row, which serialises grants without
touching the reservation path. No lock is ever held while a site is called: no function here calls one.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, NoReturn

from sqlalchemy import (
    ColumnElement,
    Engine,
    and_,
    bindparam,
    event,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, ExceptionContext
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
#: Largest amount in one operation or account: keeps every sum of micro-units inside a signed 64-bit integer.
MAX_AMOUNT = Decimal(10) ** 12

Outcome = Literal["charge", "release", "void"]
_CLOSED_STATE = {
    "charge": ReservationState.CHARGED,
    "release": ReservationState.RELEASED,
    "void": ReservationState.VOIDED,
}


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
    overrun: Decimal  # the amount charged above the reservation (booked on the overrun account)
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


@dataclass(frozen=True)
class UsageTotal:
    """Charges (within reservations) and overruns summed per person, site, unit and allocation period."""

    project: str
    person: str | None
    site: str
    unit: str
    period_start: datetime
    charged: Decimal
    overrun: Decimal
    jobs: int

    @property
    def total(self) -> Decimal:
        return self.charged + self.overrun


# --- accounts -------------------------------------------------------------------------------------


def _micro(amount: Decimal, field: str) -> int:
    if not amount.is_finite() or abs(amount) > MAX_AMOUNT:
        raise InvalidRequest(f"an amount must be finite and at most {MAX_AMOUNT}", field=field)
    try:
        return to_micro(amount)
    except ValueError as exc:
        raise InvalidRequest(str(exc), field=field) from exc


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
    lock: bool = False,
) -> LedgerAccount:
    identity = {"kind": kind.value, "project": project, "site": site, "unit": unit, "period_start": start}
    query = select(LedgerAccount).filter_by(**identity).execution_options(populate_existing=True)
    if lock:  # FOR NO KEY UPDATE: enough to exclude every other writer of the row
        query = query.with_for_update(key_share=True)
    found = session.scalars(query).first()
    if found is not None:
        return found
    _insert_ignore(
        session,
        {**identity, "period_end": end, "granted": 0, "reserved": 0, "charged": 0, "created_at": datetime.now(UTC)},
    )
    return session.scalars(query).one()


def _counterparty(session: Session, kind: AccountKind, site: str, unit: str, *, lock: bool = False) -> LedgerAccount:
    return _account(session, kind=kind, project="", site=site, unit=unit, start=EPOCH, end=END_OF_TIME, lock=lock)


def _overrun_account(session: Session, project: str, site: str, unit: str, start: datetime, end: datetime) -> int:
    return _account(session, kind=AccountKind.OVERRUN, project=project, site=site, unit=unit, start=start, end=end).id


def _dated_in(start: datetime, end: datetime, at: datetime) -> datetime:
    return max(start, min(at, end - _LAST_INSTANT))


def _entry_row(
    *,
    key: str,
    kind: EntryKind,
    layer: Layer,
    debit: int,
    credit: int,
    amount: int,
    at: datetime,
    effective_at: datetime,
    actor: str,
    reason: str,
    job_id: str | None = None,
    person: str | None = None,
) -> dict[str, Any]:
    return {
        "key": key,
        "kind": kind.value,
        "layer": layer.value,
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": amount,
        "job_id": job_id,
        "person": person,
        "actor": actor[:255],
        "reason": reason[:500],
        "effective_at": effective_at,
        "recorded_at": at,
    }


def _write_entries(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:  # Core executemany: the ORM's bulk path costs more than the statement
        session.connection().execute(insert(LedgerEntry), rows)


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
    already admitted stay covered. ``end`` may move earlier, down to just after the period's last entry
    (ending an allocation now: ``end=at``); jobs still reserved then settle at the period's last instant.
    """
    if amount < 0:
        raise InvalidRequest("an allocation cannot be negative", field="amount")
    if start >= end:
        raise InvalidRequest("the period must end after it starts", field="end")
    target = _micro(amount, "amount")
    _reservations_now(session)
    # Serialise grants per (site, unit): overlap checks and period moves cannot race each other.
    _counterparty(session, AccountKind.ALLOCATOR, site, unit, lock=True)
    _counterparty(session, AccountKind.USAGE, site, unit)  # reservations book against it
    identity = {
        "kind": AccountKind.ALLOCATION.value,
        "project": project,
        "site": site,
        "unit": unit,
        "period_start": start,
    }
    account = session.scalars(
        select(LedgerAccount)
        .filter_by(**identity)
        .with_for_update(key_share=True)  # FOR NO KEY UPDATE, as above
        .execution_options(populate_existing=True)
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
            session, kind=AccountKind.ALLOCATION, project=project, site=site, unit=unit, start=start, end=end, lock=True
        )
    elif end != account.period_end:
        # The row lock is held: no reservation or settlement can date an entry against the old end now.
        last = session.scalar(
            select(func.max(LedgerEntry.effective_at)).where(
                or_(LedgerEntry.debit_account_id == account.id, LedgerEntry.credit_account_id == account.id)
            )
        )
        if last is not None and end <= last:
            raise Conflict(f"the period cannot end before its last entry ({last.isoformat()})", field="end")
        session.execute(update(LedgerAccount).where(LedgerAccount.id == account.id).values(period_end=end))
        session.execute(
            update(LedgerAccount)
            .where(
                LedgerAccount.kind == AccountKind.OVERRUN.value,
                LedgerAccount.project == project,
                LedgerAccount.site == site,
                LedgerAccount.unit == unit,
                LedgerAccount.period_start == start,
            )
            .values(period_end=end)
        )
    _regrant(session, account.id, target - account.granted, actor=actor, reason=reason, at=at)
    return _balance_of(session, account.id)


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
    delta = _micro(amount, "amount")
    _reservations_now(session)
    _counterparty(session, AccountKind.ALLOCATOR, site, unit, lock=True)
    account = _active_allocation(session, project=project, site=site, unit=unit, at=at)
    if account is None:
        raise NoActiveAllocation(f"project {project} has no active {unit} allocation at {site}")
    _regrant(session, account.id, delta, actor=actor, reason=reason, at=at)
    return _balance_of(session, account.id)


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


def _regrant(session: Session, account_id: int, delta: int, *, actor: str, reason: str, at: datetime) -> None:
    """Move ``delta`` micro-units between the allocator and the account, refusing to uncover admitted jobs."""
    if delta == 0:
        return
    available = LedgerAccount.granted - LedgerAccount.reserved - LedgerAccount.charged
    guard = LedgerAccount.granted + delta <= to_micro(MAX_AMOUNT) if delta > 0 else available >= -delta
    row = session.execute(
        update(LedgerAccount)
        .where(LedgerAccount.id == account_id, guard)
        .values(granted=LedgerAccount.granted + delta)
        .returning(LedgerAccount.site, LedgerAccount.unit, LedgerAccount.period_start, LedgerAccount.period_end)
    ).first()
    if row is None:
        acc = session.scalars(
            select(LedgerAccount).where(LedgerAccount.id == account_id).execution_options(populate_existing=True)
        ).one()
        if delta > 0:
            raise InvalidRequest(f"an allocation cannot exceed {MAX_AMOUNT} {acc.unit}", field="amount")
        committed = from_micro(acc.reserved + acc.charged)
        raise Conflict(
            f"the grant cannot go below what is reserved and charged ({committed} {acc.unit})",
            field="amount",
            minimum=str(committed),
        )
    site, unit, start, end = row
    allocator = _counterparty(session, AccountKind.ALLOCATOR, site, unit).id
    kind, debit, credit = (
        (EntryKind.GRANT, allocator, account_id) if delta > 0 else (EntryKind.REVOKE, account_id, allocator)
    )
    _write_entries(
        session,
        [
            _entry_row(
                key=f"{kind.value}:{account_id}:{uuid.uuid4()}",
                kind=kind,
                layer=Layer.POSTED,
                debit=debit,
                credit=credit,
                amount=abs(delta),
                at=at,
                effective_at=_dated_in(start, end, at),
                actor=actor,
                reason=reason,
            )
        ],
    )


def _active_filter(project: str, site: str, unit: str, at: datetime) -> list[ColumnElement[bool]]:
    return [
        LedgerAccount.kind == AccountKind.ALLOCATION.value,
        LedgerAccount.project == project,
        LedgerAccount.site == site,
        LedgerAccount.unit == unit,
        LedgerAccount.period_start <= at,
        LedgerAccount.period_end > at,
    ]


def _active_allocation(session: Session, *, project: str, site: str, unit: str, at: datetime) -> LedgerAccount | None:
    return session.scalars(
        select(LedgerAccount).where(*_active_filter(project, site, unit, at)).execution_options(populate_existing=True)
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
    """Reserve ``amount`` for ``job_id`` if and only if the allocation active at ``at`` can cover it.

    The availability test and the write are one conditional UPDATE, so concurrent reservations (threads,
    processes, replicas) can never overdraw. On SQLite it runs here, under the database lock the
    transaction took with BEGIN IMMEDIATE. On PostgreSQL it runs at COMMIT (a deferred constraint trigger,
    see the first migration): the allocation row is locked only while the commit is written, never across
    a round trip to the client or the rest of the caller's transaction. Here, the allocation is checked
    against the last committed state, so a refusal is usually raised at once; a reservation that loses a
    race for the last units is refused at commit, and the commit raises QuotaExceeded (or
    NoActiveAllocation) instead of a database error. Either way nothing of the transaction remains.
    Replaying the same job id returns the original reservation (Conflict if it differs).
    """
    micro = _micro(amount, "amount")
    if micro <= 0:
        raise InvalidRequest("a job must cost something to reserve", field="time_limit")
    params = {
        "p_project": project,
        "p_site": site,
        "p_unit": unit,
        "p_at": at,
        "p_micro": micro,
        "p_job_id": job_id,
        "p_person": person,
        "p_actor": person[:255],
        "p_key": f"reserve:{job_id}",
        "p_epoch": EPOCH,
    }
    sql = _statements()
    conn = session.connection()  # Core execution: the ORM adds nothing here but time
    if conn.dialect.name == "postgresql":
        # One statement: the replay lookup, the check against committed state and both INSERTs; the
        # allocation's UPDATE follows at commit.
        _translate_refusals(conn.engine)
        if at.tzinfo is None:
            raise ValueError("naive datetimes are refused: the database stores UTC")
        statement, constants = _reserve_sql(conn.dialect)
        # Compiled once: the hot path skips SQLAlchemy's per-call parameter processing (about 10% of it).
        row = conn.exec_driver_sql(statement, {**constants, **params}).first()
    else:
        # SQLite: the transaction holds the database's write lock (BEGIN IMMEDIATE); steps cannot interleave.
        row = conn.execute(sql.replay, params).first()
        if row is None and (taken := conn.execute(sql.take, params).first()) is not None:
            usage = _counterparty(session, AccountKind.USAGE, site, unit).id
            conn.execute(sql.add_reservation, {**params, "p_account_id": taken.id})
            conn.execute(sql.add_reserve_entry, {**params, "p_account_id": taken.id, "p_usage_id": usage})
            row = conn.execute(sql.replay, params).first()
            replayed = False
        else:
            replayed = True
    if row is None:
        _explain_refusal(session, project=project, site=site, unit=unit, amount=from_micro(micro), at=at)
    if conn.dialect.name == "postgresql":
        replayed = row.how == "prior"
    if replayed and (row.project, row.site, row.unit, row.amount) != (project, site, unit, micro):
        raise Conflict(f"job {job_id} already holds a different reservation", field="job_id")
    return ReservationResult(job_id, from_micro(row.amount), unit, row.period_start.astimezone(UTC), replayed=replayed)


_COMPILED: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}


def _reserve_sql(dialect: Dialect) -> tuple[str, dict[str, Any]]:
    """The reservation statement compiled for one driver, once (the bound constants alongside)."""
    key = (dialect.name, dialect.driver)
    if key not in _COMPILED:
        compiled = _statements().reserve_all.compile(dialect=dialect)
        _COMPILED[key] = str(compiled), {k: v for k, v in compiled.params.items() if not k.startswith("p_")}
    return _COMPILED[key]


@dataclass(frozen=True)
class _Statements:
    """The hot path's statements, built once with bound parameters (building them costs more than running them)."""

    replay: Any
    take: Any
    add_reservation: Any
    add_reserve_entry: Any
    reserve_all: Any


def _param(table: Any, column: str, name: str | None = None) -> Any:
    """A bound parameter typed like ``table.column`` (timestamps get ``UTCDateTime``'s UTC handling)."""
    return bindparam(name or f"p_{column}", type_=table.__table__.c[column].type)


@functools.cache
def _statements() -> _Statements:
    active = [
        LedgerAccount.kind == AccountKind.ALLOCATION.value,
        LedgerAccount.project == bindparam("p_project"),
        LedgerAccount.site == bindparam("p_site"),
        LedgerAccount.unit == bindparam("p_unit"),
        LedgerAccount.period_start <= _param(LedgerAccount, "period_start", "p_at"),
        LedgerAccount.period_end > _param(LedgerAccount, "period_end", "p_at"),
        LedgerAccount.granted - LedgerAccount.reserved - LedgerAccount.charged >= bindparam("p_micro"),
    ]
    take = (
        update(LedgerAccount)
        .where(*active)
        .values(reserved=LedgerAccount.reserved + bindparam("p_micro"))
        .returning(LedgerAccount.id, LedgerAccount.period_start)
    )
    reservation_columns = {
        "job_id": _param(Reservation, "job_id"),
        "person": _param(Reservation, "person"),
        "amount": _param(Reservation, "amount", "p_micro"),
        "state": literal(ReservationState.PENDING.value),
        "charged": literal(0),
        "overrun": literal(0),
        "created_at": _param(Reservation, "created_at", "p_at"),
    }
    entry_columns = {
        "key": _param(LedgerEntry, "key"),
        "kind": literal(EntryKind.RESERVE.value),
        "layer": literal(Layer.PENDING.value),
        "amount": _param(LedgerEntry, "amount", "p_micro"),
        "job_id": _param(LedgerEntry, "job_id"),
        "person": _param(LedgerEntry, "person"),
        "actor": _param(LedgerEntry, "actor"),
        "reason": literal("job accepted"),
        "effective_at": _param(LedgerEntry, "effective_at", "p_at"),
        "recorded_at": _param(LedgerEntry, "recorded_at", "p_at"),
    }
    replay = (
        select(
            Reservation.amount,
            LedgerAccount.project,
            LedgerAccount.site,
            LedgerAccount.unit,
            LedgerAccount.period_start,
        )
        .join(LedgerAccount, LedgerAccount.id == Reservation.account_id)
        .where(Reservation.job_id == bindparam("p_job_id"))
    )
    prior = replay.cte("prior")
    acc = (
        select(LedgerAccount.id, LedgerAccount.period_start)
        .where(*active, ~exists(select(literal(1)).select_from(prior)))
        .cte("acc")
    )
    usage_id = (
        select(LedgerAccount.id)
        .where(
            LedgerAccount.kind == AccountKind.USAGE.value,
            LedgerAccount.project == "",
            LedgerAccount.site == bindparam("p_site"),
            LedgerAccount.unit == bindparam("p_unit"),
            LedgerAccount.period_start == _param(LedgerAccount, "period_start", "p_epoch"),
        )
        .scalar_subquery()
    )
    res_cte = insert(Reservation).from_select(
        ["account_id", *reservation_columns], select(acc.c.id, *reservation_columns.values())
    )
    ent_cte = insert(LedgerEntry).from_select(
        ["debit_account_id", "credit_account_id", *entry_columns],
        select(acc.c.id, usage_id, *entry_columns.values()),
    )
    outcome = union_all(
        select(
            literal("new").label("how"),
            _param(Reservation, "amount", "p_micro").label("amount"),
            bindparam("p_project").label("project"),
            bindparam("p_site").label("site"),
            bindparam("p_unit").label("unit"),
            acc.c.period_start,
        ),
        select(
            literal("prior").label("how"),
            prior.c.amount,
            prior.c.project,
            prior.c.site,
            prior.c.unit,
            prior.c.period_start,
        ),
    )
    return _Statements(
        replay=replay,
        take=take,
        add_reservation=insert(Reservation).values(account_id=bindparam("p_account_id"), **reservation_columns),
        add_reserve_entry=insert(LedgerEntry).values(
            debit_account_id=bindparam("p_account_id"), credit_account_id=bindparam("p_usage_id"), **entry_columns
        ),
        reserve_all=outcome.add_cte(res_cte.cte("res")).add_cte(ent_cte.cte("ent")),
    )


def _translate_refusals(engine: Engine) -> None:
    """Make the engine raise the ledger's errors for a reservation refused at commit (PostgreSQL)."""
    if not event.contains(engine, "handle_error", _refusal_at_commit):
        event.listen(engine, "handle_error", _refusal_at_commit)


def _refusal_at_commit(context: ExceptionContext) -> BaseException | None:
    code = getattr(context.original_exception, "sqlstate", None)
    if code not in ("AN001", "AN002"):
        return None
    diag = getattr(context.original_exception, "diag", None)
    detail = json.loads(getattr(diag, "message_detail", None) or "{}")
    project, site, unit = detail.get("project", "?"), detail.get("site", "?"), detail.get("unit", "?")
    if code == "AN002":
        return NoActiveAllocation(
            f"project {project} has no active {unit} allocation at {site}", project=project, site=site, unit=unit
        )
    available, price = from_micro(int(detail.get("available", 0))), from_micro(int(detail.get("price", 0)))
    return QuotaExceeded(
        f"the job costs {price} {unit} but project {project} has {available} {unit} available at {site}",
        available=available,
        price=price,
        unit=unit,
    )


def _reservations_now(session: Session) -> None:
    """PostgreSQL: apply this transaction's pending reservations before touching balances directly."""
    if session.get_bind().dialect.name == "postgresql":
        _translate_refusals(session.get_bind().engine)
        session.execute(text("SET CONSTRAINTS ledger_reservations_take IMMEDIATE"))


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
    excess is posted to the project's overrun account (never silently; ``Settlement.overrun``). Replaying
    a settlement of a job already settled, whatever the outcome reported, changes nothing and returns the
    original result with ``replayed=True``.
    """
    if outcome not in _CLOSED_STATE:
        raise InvalidRequest(f"unknown outcome {outcome!r}", field="outcome")
    actual = _micro(amount, "amount") if outcome == "charge" else 0
    if actual < 0:
        raise InvalidRequest("a charge cannot be negative", field="amount")
    _reservations_now(session)
    sql = _settle_statements()
    res = session.execute(sql.find, {"p_job_id": job_id}).first()
    if res is None:
        raise NotFound(f"no reservation for job {job_id}")
    if res.state != ReservationState.PENDING.value:
        return _settlement(res, replayed=True)
    charged = min(actual, res.amount)
    overrun = actual - charged
    state = _CLOSED_STATE[outcome]
    # The state change is the exactly-once gate: a concurrent settlement waits on this row, then finds
    # nothing pending and replays.
    closed = session.execute(
        sql.close,
        {"p_job_id": job_id, "p_state": state.value, "p_charged": charged, "p_overrun": overrun, "p_at": at},
    ).first()
    if closed is None:
        return _settlement(session.execute(sql.find, {"p_job_id": job_id}).one(), replayed=True)
    # Locks the allocation and returns its current period, so the entries below are dated inside it.
    book = session.execute(
        sql.book, {"p_account_id": res.account_id, "p_release": res.amount, "p_charged": charged}
    ).one()
    usage = session.execute(sql.usage_id, {"p_site": book.site, "p_unit": book.unit, "p_epoch": EPOCH}).scalar()
    if usage is None:  # pragma: no cover - created with the first allocation; kept for ledgers made before
        usage = _counterparty(session, AccountKind.USAGE, book.site, book.unit).id
    common: dict[str, Any] = {
        "at": at,
        "effective_at": _dated_in(book.period_start, book.period_end, at),
        "actor": actor,
        "job_id": job_id,
        "person": res.person,
    }
    rows = [
        _entry_row(
            key=f"close:{job_id}",
            kind=EntryKind.VOID if outcome == "void" else EntryKind.RELEASE,
            layer=Layer.PENDING,
            debit=usage,
            credit=res.account_id,
            amount=res.amount,
            reason=reason or f"reservation {state.value}",
            **common,
        )
    ]
    if charged:
        rows.append(
            _entry_row(
                key=f"charge:{job_id}",
                kind=EntryKind.CHARGE,
                layer=Layer.POSTED,
                debit=res.account_id,
                credit=usage,
                amount=charged,
                reason=reason or "usage",
                **common,
            )
        )
    if overrun:
        debt = _overrun_account(session, book.project, book.site, book.unit, book.period_start, book.period_end)
        session.execute(
            update(LedgerAccount).where(LedgerAccount.id == debt).values(charged=LedgerAccount.charged + overrun)
        )
        rows.append(
            _entry_row(
                key=f"overrun:{job_id}",
                kind=EntryKind.OVERRUN,
                layer=Layer.POSTED,
                debit=debt,
                credit=usage,
                amount=overrun,
                reason=reason or "usage above the reservation",
                **common,
            )
        )
    _write_entries(session, rows)
    return Settlement(
        job_id=job_id,
        state=state,
        reserved=from_micro(res.amount),
        charged=from_micro(charged),
        overrun=from_micro(overrun),
        replayed=False,
    )


@dataclass(frozen=True)
class _SettleStatements:
    find: Any
    close: Any
    book: Any
    usage_id: Any


@functools.cache
def _settle_statements() -> _SettleStatements:
    return _SettleStatements(
        find=select(
            Reservation.job_id,
            Reservation.account_id,
            Reservation.person,
            Reservation.amount,
            Reservation.state,
            Reservation.charged,
            Reservation.overrun,
        ).where(Reservation.job_id == bindparam("p_job_id")),
        close=(
            update(Reservation)
            .where(Reservation.job_id == bindparam("p_job_id"), Reservation.state == ReservationState.PENDING.value)
            .values(
                state=bindparam("p_state"),
                charged=bindparam("p_charged"),
                overrun=bindparam("p_overrun"),
                closed_at=_param(Reservation, "closed_at", "p_at"),
            )
            .returning(Reservation.job_id)
        ),
        book=(
            update(LedgerAccount)
            .where(LedgerAccount.id == bindparam("p_account_id"))
            .values(
                reserved=LedgerAccount.reserved - bindparam("p_release"),
                charged=LedgerAccount.charged + bindparam("p_charged"),
            )
            .returning(
                LedgerAccount.project,
                LedgerAccount.site,
                LedgerAccount.unit,
                LedgerAccount.period_start,
                LedgerAccount.period_end,
            )
        ),
        usage_id=select(LedgerAccount.id).where(
            LedgerAccount.kind == AccountKind.USAGE.value,
            LedgerAccount.project == "",
            LedgerAccount.site == bindparam("p_site"),
            LedgerAccount.unit == bindparam("p_unit"),
            LedgerAccount.period_start == _param(LedgerAccount, "period_start", "p_epoch"),
        ),
    )


def _settlement(res: Any, *, replayed: bool) -> Settlement:
    return Settlement(
        job_id=res.job_id,
        state=ReservationState(res.state),
        reserved=from_micro(res.amount),
        charged=from_micro(res.charged),
        overrun=from_micro(res.overrun),
        replayed=replayed,
    )


def reservation_of(session: Session, job_id: str) -> Settlement | None:
    res = session.execute(_settle_statements().find, {"p_job_id": job_id}).first()
    return None if res is None else _settlement(res, replayed=False)


def reservations_of(session: Session, job_ids: Sequence[str]) -> dict[str, Settlement]:
    """The reservations of many jobs in one statement (a page of jobs), by job id."""
    if not job_ids:
        return {}
    columns = _settle_statements().find.selected_columns
    rows = session.execute(select(*columns).where(Reservation.job_id.in_(list(job_ids))))
    return {row.job_id: _settlement(row, replayed=False) for row in rows}


# --- reading --------------------------------------------------------------------------------------

_BALANCE_FILTERS = {
    "all": (),
    "project": ("project",),
    "project_site": ("project", "site"),
    "id": ("id",),
}


@functools.cache
def _balance_statement(variant: str) -> Any:
    debt = aliased(LedgerAccount)
    query = (
        select(
            LedgerAccount.project,
            LedgerAccount.site,
            LedgerAccount.unit,
            LedgerAccount.period_start,
            LedgerAccount.period_end,
            LedgerAccount.granted,
            LedgerAccount.reserved,
            LedgerAccount.charged,
            func.coalesce(debt.charged, 0).label("overrun"),
        )
        .outerjoin(
            debt,
            and_(
                debt.kind == AccountKind.OVERRUN.value,
                debt.project == LedgerAccount.project,
                debt.site == LedgerAccount.site,
                debt.unit == LedgerAccount.unit,
                debt.period_start == LedgerAccount.period_start,
            ),
        )
        .where(LedgerAccount.kind == AccountKind.ALLOCATION.value)
        .order_by(LedgerAccount.project, LedgerAccount.site, LedgerAccount.unit, LedgerAccount.period_start)
    )
    for column in _BALANCE_FILTERS[variant]:
        query = query.where(getattr(LedgerAccount, column) == bindparam(f"p_{column}"))
    return query


def _balances(session: Session, variant: str, **params: Any) -> list[Balance]:
    rows = session.execute(_balance_statement(variant), {f"p_{k}": v for k, v in params.items()}).all()
    return [
        Balance(
            project=row.project,
            site=row.site,
            unit=row.unit,
            period_start=row.period_start,
            period_end=row.period_end,
            granted=from_micro(row.granted),
            reserved=from_micro(row.reserved),
            charged=from_micro(row.charged),
            overrun=from_micro(int(row.overrun)),
        )
        for row in rows
    ]


def _balance_of(session: Session, account_id: int) -> Balance:
    [balance] = _balances(session, "id", id=account_id)
    return balance


def balances(session: Session, *, project: str, site: str | None = None) -> list[Balance]:
    """Every allocation period of ``project`` (optionally at one site), by site, unit, then oldest first."""
    if site is None:
        return _balances(session, "project", project=project)
    return _balances(session, "project_site", project=project, site=site)


def all_balances(session: Session) -> list[Balance]:
    """Every allocation account, for metrics and reconciliation."""
    return _balances(session, "all")


def usage(
    session: Session,
    *,
    project: str,
    site: str | None = None,
    person: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    period_start: datetime | None = None,
) -> list[UsageLine]:
    """Posted charges and overruns of a project, one line per entry, oldest first.

    ``start``/``end`` filter on the entries' dates; ``period_start`` selects one allocation period.
    """
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
    if period_start is not None:
        query = query.where(account.period_start == period_start)
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


def usage_totals(lines: Iterable[UsageLine]) -> list[UsageTotal]:
    """``usage`` lines summed per (person, site, unit, period): the report by person, site and period."""
    sums: dict[tuple[str, str | None, str, str, datetime], list[Any]] = {}
    for line in lines:
        key = (line.project, line.person, line.site, line.unit, line.period_start)
        acc = sums.setdefault(key, [Decimal(0), Decimal(0), set()])
        acc[0 if line.kind == EntryKind.CHARGE.value else 1] += line.amount
        acc[2].add(line.job_id)
    return [
        UsageTotal(project, person, site, unit, period, charged, overrun, len(jobs))
        for (project, person, site, unit, period), (charged, overrun, jobs) in sorted(
            sums.items(), key=lambda item: (item[0][2], item[0][3], item[0][4], item[0][1] or "")
        )
    ]


USAGE_CSV_COLUMNS = ("effective_at", "project", "site", "unit", "period_start", "person", "job_id", "kind", "amount")


def usage_csv(lines: Iterable[UsageLine]) -> str:
    """``usage`` lines as CSV (RFC 4180, header first), for ``Accept: text/csv``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(USAGE_CSV_COLUMNS)
    for line in lines:
        writer.writerow(
            [
                line.effective_at.isoformat(),
                line.project,
                line.site,
                line.unit,
                line.period_start.isoformat(),
                line.person or "",
                line.job_id or "",
                line.kind,
                str(line.amount),
            ]
        )
    return out.getvalue()


# --- invariants -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CheckStatements:
    accounts: Any
    derived: Any
    derived_one: Any
    pending: Any
    outside: Any
    reservations: Any
    orphans: Any
    dangling: Any


@functools.cache
def _check_statements() -> _CheckStatements:
    owner = aliased(LedgerAccount)
    other = aliased(LedgerAccount)
    checked = [AccountKind.ALLOCATION.value, AccountKind.OVERRUN.value]

    def side(own_col: Any, other_col: Any, sign: int, one: bool) -> Any:
        query = (
            select(
                own_col.label("account_id"),
                LedgerEntry.layer.label("layer"),
                other.kind.label("other_kind"),
                func.sum(LedgerEntry.amount * sign).label("total"),
            )
            .join(owner, owner.id == own_col)
            .join(other, other.id == other_col)
            .where(owner.kind.in_(checked))
            .group_by(own_col, LedgerEntry.layer, other.kind)
        )
        return query.where(own_col == bindparam("p_account_id")) if one else query

    def derived(one: bool) -> Any:
        return union_all(
            side(LedgerEntry.debit_account_id, LedgerEntry.credit_account_id, 1, one),
            side(LedgerEntry.credit_account_id, LedgerEntry.debit_account_id, -1, one),
        )

    def per_job(*kinds: EntryKind, label: str) -> Any:
        return (
            select(LedgerEntry.job_id, func.count().label("n"), func.sum(LedgerEntry.amount).label("total"))
            .where(LedgerEntry.kind.in_([k.value for k in kinds]), LedgerEntry.job_id.is_not(None))
            .group_by(LedgerEntry.job_id)
            .subquery(label)
        )

    opened = per_job(EntryKind.RESERVE, label="opened")
    closed = per_job(EntryKind.RELEASE, EntryKind.VOID, label="closed")
    charged = per_job(EntryKind.CHARGE, label="charged")
    overrun = per_job(EntryKind.OVERRUN, label="overrun")
    n_open = func.coalesce(opened.c.n, 0)
    n_close = func.coalesce(closed.c.n, 0)
    total_charged = func.coalesce(charged.c.total, 0)
    total_overrun = func.coalesce(overrun.c.total, 0)
    is_pending = Reservation.state == ReservationState.PENDING.value
    return _CheckStatements(
        accounts=select(
            LedgerAccount.id,
            LedgerAccount.kind,
            LedgerAccount.project,
            LedgerAccount.site,
            LedgerAccount.unit,
            LedgerAccount.period_start,
            LedgerAccount.granted,
            LedgerAccount.reserved,
            LedgerAccount.charged,
        ).where(LedgerAccount.kind.in_(checked)),
        derived=derived(one=False),
        derived_one=derived(one=True),
        pending=(
            select(Reservation.account_id, func.sum(Reservation.amount))
            .where(is_pending)
            .group_by(Reservation.account_id)
        ),
        outside=(
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
                LedgerAccount.kind.in_(checked),
                or_(
                    LedgerEntry.effective_at < LedgerAccount.period_start,
                    LedgerEntry.effective_at >= LedgerAccount.period_end,
                ),
            )
        ),
        reservations=(
            select(Reservation.job_id, Reservation.state, n_open, n_close, total_charged, total_overrun)
            .outerjoin(opened, opened.c.job_id == Reservation.job_id)
            .outerjoin(closed, closed.c.job_id == Reservation.job_id)
            .outerjoin(charged, charged.c.job_id == Reservation.job_id)
            .outerjoin(overrun, overrun.c.job_id == Reservation.job_id)
            .where(
                or_(
                    n_open != 1,
                    opened.c.total != Reservation.amount,
                    and_(is_pending, n_close != 0),
                    and_(~is_pending, or_(n_close != 1, closed.c.total != Reservation.amount)),
                    total_charged != Reservation.charged,
                    total_overrun != Reservation.overrun,
                )
            )
        ),
        orphans=(
            select(func.count())
            .select_from(LedgerEntry)
            .outerjoin(Reservation, Reservation.job_id == LedgerEntry.job_id)
            .where(LedgerEntry.job_id.is_not(None), Reservation.job_id.is_(None))
        ),
        dangling=select(  # references to accounts that do not exist (there are no foreign keys: see models)
            select(func.count())
            .select_from(LedgerEntry)
            .where(
                or_(
                    ~exists().where(LedgerAccount.id == LedgerEntry.debit_account_id),
                    ~exists().where(LedgerAccount.id == LedgerEntry.credit_account_id),
                )
            )
            .scalar_subquery()
            + select(func.count())
            .select_from(Reservation)
            .where(~exists().where(LedgerAccount.id == Reservation.account_id))
            .scalar_subquery()
        ),
    )


def _derived(session: Session, account_id: int | None = None) -> dict[int, tuple[int, int, int]]:
    """(granted, reserved, charged) of allocation and overrun accounts, recomputed from entries alone."""
    sql = _check_statements()
    rows = (
        session.execute(sql.derived)
        if account_id is None
        else session.execute(sql.derived_one, {"p_account_id": account_id})
    )
    result: dict[int, list[int]] = {}
    for acc_id, layer, other_kind, total in rows:
        figures = result.setdefault(acc_id, [0, 0, 0])
        value = int(total)  # debit minus credit
        if layer == Layer.PENDING.value:
            figures[1] += value
        elif other_kind == AccountKind.ALLOCATOR.value:
            figures[0] -= value
        else:
            figures[2] += value
    return {acc_id: (g, r, c) for acc_id, (g, r, c) in result.items()}


def derived_balance(session: Session, account_id: int) -> tuple[int, int, int]:
    """(granted, reserved, charged) of an account, in micro-units, recomputed from its entries alone."""
    return _derived(session, account_id).get(account_id, (0, 0, 0))


def check_invariants(session: Session) -> list[str]:
    """Every broken invariant, as sentences. Empty when the ledger is sound.

    Checks: cached figures == figures derived from the entries (so granted = available + reserved +
    charged holds by entries, not by the cache); 0 <= reserved, charged and reserved + charged <= granted;
    reserved == the sum of the account's open reservations; no entry dated outside its account's period;
    every reservation has exactly one reserve entry for its amount and, once closed, exactly one close
    entry and charge/overrun entries equal to what it records; no entry names a job without reservation;
    no entry or reservation refers to a missing account.
    """
    sql = _check_statements()
    problems: list[str] = []
    derived = _derived(session)
    pending = {account_id: int(total) for account_id, total in session.execute(sql.pending)}
    for acc in session.execute(sql.accounts):
        name = f"{acc.kind} {acc.project}@{acc.site}/{acc.unit} from {acc.period_start.isoformat()}"
        from_entries = derived.get(acc.id, (0, 0, 0))
        if acc.kind == AccountKind.OVERRUN.value:
            if from_entries != (0, 0, acc.charged) or acc.granted or acc.reserved:
                problems.append(f"{name}: cached overrun {acc.charged} != entries {from_entries}")
            continue
        if from_entries != (acc.granted, acc.reserved, acc.charged):
            problems.append(f"{name}: cached {(acc.granted, acc.reserved, acc.charged)} != entries {from_entries}")
        if acc.reserved < 0 or acc.charged < 0 or acc.reserved + acc.charged > acc.granted:
            problems.append(f"{name}: reserved {acc.reserved} + charged {acc.charged} exceeds granted {acc.granted}")
        if pending.get(acc.id, 0) != acc.reserved:
            problems.append(f"{name}: reserved {acc.reserved} != open reservations {pending.get(acc.id, 0)}")
    outside = session.execute(sql.outside).scalar()
    if outside:
        problems.append(f"{outside} entries are dated outside their allocation period")
    problems.extend(
        f"reservation of job {job_id} ({state}) has {n_o} reserve and {n_c} close entries, "
        f"charge entries {c}, overrun entries {o}"
        for job_id, state, n_o, n_c, c, o in session.execute(sql.reservations)
    )
    orphans = session.execute(sql.orphans).scalar()
    if orphans:
        problems.append(f"{orphans} entries name a job that has no reservation")
    dangling = session.execute(sql.dangling).scalar()
    if dangling:
        problems.append(f"{dangling} entries or reservations refer to an account that does not exist")
    return problems


def assert_invariants(session: Session) -> None:
    problems = check_invariants(session)
    if problems:
        raise LedgerInvariantBroken("; ".join(problems[:10]), count=len(problems))


def open_reservations(session: Session, *, older_than: datetime | None = None) -> Sequence[str]:
    """Job ids whose reservation is still pending (optionally reserved before ``older_than``)."""
    query = select(Reservation.job_id).where(Reservation.state == ReservationState.PENDING.value)
    if older_than is not None:
        query = query.where(Reservation.created_at < older_than)
    return session.scalars(query.order_by(Reservation.created_at, Reservation.job_id)).all()


__all__ = [
    "MAX_AMOUNT",
    "Balance",
    "Outcome",
    "ReservationResult",
    "Settlement",
    "UsageLine",
    "UsageTotal",
    "all_balances",
    "assert_invariants",
    "balances",
    "check_invariants",
    "derived_balance",
    "open_reservations",
    "reservation_of",
    "reserve",
    "set_allocation",
    "settle",
    "top_up",
    "usage",
    "usage_csv",
    "usage_totals",
]

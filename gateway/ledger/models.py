"""Ledger tables: accounts per (project, site, unit, period), append-only entries, one reservation per job.

Amounts are integer micro-units of the site's unit (see ``gateway.billing``). Every entry moves an amount
from a debit account to a credit account, in one of two layers: ``pending`` (reservations) or ``posted``
(grants, charges). Allocation accounts cache granted / reserved / charged so a reservation is one
conditional UPDATE; the database itself refuses a row where reserved + charged would exceed granted,
and refuses to delete an account or change what it is.
Counterparty accounts (the allocator, the site's usage sink) keep no cache, so no row is hot across
projects; their balances are derived from the entries.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db import Base, UTCDateTime

Id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements only INTEGER PRIMARY KEY


class AccountKind(StrEnum):
    ALLOCATION = "allocation"  # a project's grant at a site, in one unit, for one period
    ALLOCATOR = "allocator"  # where grants come from (per site and unit)
    USAGE = "usage"  # where reservations and charges go (per site and unit)
    OVERRUN = "overrun"  # a project's debt when a charge exceeded its reservation


class EntryKind(StrEnum):
    GRANT = "grant"
    REVOKE = "revoke"
    RESERVE = "reserve"
    RELEASE = "release"
    VOID = "void"
    CHARGE = "charge"
    OVERRUN = "overrun"
    ADJUSTMENT = "adjustment"


class Layer(StrEnum):
    PENDING = "pending"
    POSTED = "posted"


class ReservationState(StrEnum):
    PENDING = "pending"
    CHARGED = "charged"
    RELEASED = "released"
    VOIDED = "voided"


class LedgerAccount(Base):
    __tablename__ = "ledger_accounts"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    project: Mapped[str] = mapped_column(String(64))  # '' for counterparty accounts
    site: Mapped[str] = mapped_column(String(64))
    unit: Mapped[str] = mapped_column(String(32))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    granted: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved: Mapped[int] = mapped_column(BigInteger, default=0)
    charged: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("kind", "project", "site", "unit", "period_start", name="uq_ledger_accounts_identity"),
        CheckConstraint(
            "kind <> 'allocation' OR (reserved >= 0 AND charged >= 0 AND reserved + charged <= granted)",
            name="never_overspent",
        ),
        CheckConstraint("period_start < period_end", name="period_ordered"),
        Index("ix_ledger_accounts_lookup", "project", "site", "unit", "kind"),
    )


class LedgerEntry(Base):
    """One movement. Append-only: a trigger refuses UPDATE and DELETE (see the first migration)."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)  # idempotency: one entry per key, ever
    kind: Mapped[str] = mapped_column(String(16))
    layer: Mapped[str] = mapped_column(String(8))
    # No FOREIGN KEY to ledger_accounts, on purpose (here and in Reservation): a foreign key makes every
    # in-flight reservation take a key-share lock on its allocation row, which on a hot allocation becomes
    # a new multixact per reservation (measured several times slower). Accounts cannot be deleted nor
    # change identity (triggers in the first migration), ids are always read from ledger_accounts in the
    # same statement, and check_invariants reports any reference to a missing account.
    debit_account_id: Mapped[int] = mapped_column(Id, index=True)
    credit_account_id: Mapped[int] = mapped_column(Id, index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    job_id: Mapped[str | None] = mapped_column(String(64), index=True)
    person: Mapped[str | None] = mapped_column(String(255))
    actor: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(String(500))
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("debit_account_id <> credit_account_id", name="two_sides"),
    )


class Reservation(Base):
    """Exactly one per job; its state leaves ``pending`` exactly once."""

    __tablename__ = "ledger_reservations"

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # No foreign key (see LedgerEntry); indexed by ix_ledger_reservations_pending, which starts with it.
    account_id: Mapped[int] = mapped_column(Id)
    person: Mapped[str] = mapped_column(String(255))
    amount: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default=ReservationState.PENDING.value)
    charged: Mapped[int] = mapped_column(BigInteger, default=0)
    overrun: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("charged >= 0 AND charged <= amount AND overrun >= 0", name="charge_within"),
        Index("ix_ledger_reservations_pending", "account_id", "state"),
    )


class ReconciliationRun(Base):
    """The last reconciliation of a site, whichever replica ran it: a lease so that one replica runs each
    round, and its totals so that every replica exports the same, current figures."""

    __tablename__ = "reconciliation_runs"

    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # when the last finished run began: the next is due an interval later (its duration does not shift it)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # [{"project", "unit", "delta"}]: site accounting minus ledger, per project and unit (delta as a string)
    totals: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)

"""Response and admin request bodies of API v1. Amounts are decimal strings: exact, never floats."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    field_validator,
)

from gateway.jobs.models import JobState
from gateway.jobs.service import JobView
from gateway.ledger.service import Balance, UsageLine

Amount = Annotated[Decimal, PlainSerializer(lambda d: format(d, "f"), return_type=str)]


def _iso_8601_only(value: object) -> object:
    # pydantic also reads numbers as Unix times: `start=0.5` would silently mean 1970.
    if not isinstance(value, datetime) and not (isinstance(value, str) and _ISO_DATE.match(value)):
        raise ValueError("use an ISO 8601 date-time, e.g. 2026-03-01T00:00:00Z")
    return value


def _utc_if_naive(value: datetime) -> datetime:
    # A date (`2026-01-01`) or a date-time without an offset means UTC: the ledger keeps UTC,
    # and operators and the CLI write allocation periods as plain dates.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
IsoDateTime = Annotated[datetime, BeforeValidator(_iso_8601_only), AfterValidator(_utc_if_naive)]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class JobEventOut(_Out):
    state: JobState
    at: datetime
    detail: str


class JobOut(_Out):
    id: str
    project: str
    site: str
    partition: str
    person: str
    name: str
    state: JobState = Field(
        description="`lost`: the site may have the job and the gateway cannot tell; its reservation stays held "
        "while the gateway keeps looking for it, and an operator resolves it if it does not turn up"
    )
    unit: str
    reserved: Amount
    charged: Amount | None
    site_job_id: str | None
    exit_code: int | None
    reason: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    history: list[JobEventOut] = Field(default_factory=list)

    @classmethod
    def of(cls, view: JobView) -> JobOut:
        data = {k: getattr(view, k) for k in cls.model_fields if k != "history"}
        history = [JobEventOut(state=s, at=a, detail=d) for s, a, d in view.history]
        return cls(**data, history=history)


class JobPageOut(_Out):
    jobs: list[JobOut]
    next_cursor: str | None


class BalanceOut(_Out):
    site: str
    unit: str
    period_start: datetime
    period_end: datetime
    active: bool
    granted: Amount
    charged: Amount
    reserved: Amount
    available: Amount
    overrun: Amount

    @classmethod
    def of(cls, b: Balance, now: datetime) -> BalanceOut:
        return cls(
            site=b.site,
            unit=b.unit,
            period_start=b.period_start,
            period_end=b.period_end,
            active=b.is_active(now),
            granted=b.granted,
            charged=b.charged,
            reserved=b.reserved,
            available=b.available,
            overrun=b.overrun,
        )


class ProjectBalanceOut(_Out):
    project: str
    balances: list[BalanceOut]


class UsageLineOut(_Out):
    job_id: str | None
    person: str | None
    site: str
    unit: str
    period_start: datetime
    kind: str
    amount: Amount
    at: datetime

    @classmethod
    def of(cls, line: UsageLine) -> UsageLineOut:
        return cls(
            job_id=line.job_id,
            person=line.person,
            site=line.site,
            unit=line.unit,
            period_start=line.period_start,
            kind=line.kind,
            amount=line.amount,
            at=line.effective_at,
        )


class UsageOut(_Out):
    project: str
    lines: list[UsageLineOut]
    totals: dict[str, Amount] = Field(description="total per 'site/unit'")


class MembershipOut(_Out):
    project: str
    role: str


class MeOut(_Out):
    person: str
    projects: list[MembershipOut]
    roles: list[str]
    site_accounts: dict[str, str]


class EstimateOut(_Out):
    """What a job would cost, without submitting it; ``available`` is the project's at the site in that unit."""

    project: str
    site: str
    partition: str
    unit: str
    price: Amount
    time_limit_minutes: int
    nodes: int
    cores: int
    memory_gb: Amount
    gpus: int
    available: Amount | None = Field(description="null when the project has no active allocation in this unit")
    enough: bool


class ReconciliationDifferenceOut(_Out):
    kind: str
    project: str | None
    unit: str | None
    job_id: str | None
    site_job_ids: list[str]
    ledger_amount: Amount
    site_amount: Amount
    delta: Amount


class ReconciliationOut(_Out):
    site: str
    since: datetime
    until: datetime
    ok: bool
    summary: str
    differences: list[ReconciliationDifferenceOut]


class PartitionOut(_Out):
    name: str
    unit: str
    billing: str
    max_time_minutes: int
    max_nodes: int
    cores_per_node: int
    memory_gb_per_node: int
    gpus_per_node: int
    exclusive: bool


class SiteOut(_Out):
    name: str
    title: str
    connector: str
    healthy: bool
    last_error: str
    partitions: list[PartitionOut]


class AllocationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Decimal = Field(ge=0, max_digits=18, decimal_places=6)
    unit: str = Field(min_length=1, max_length=32)
    start: IsoDateTime
    end: IsoDateTime
    project_account: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    reason: str = Field(default="", max_length=500)


class ResolveIn(BaseModel):
    """How an operator ends a lost job: a charge from the site's own records, or void."""

    model_config = ConfigDict(extra="forbid")

    charge: Decimal | None = Field(
        default=None, ge=0, max_digits=18, decimal_places=6, description="what to charge, in the job's unit"
    )
    void: bool = Field(default=False, validate_default=True, description="release the reservation: it never ran")
    reason: str = Field(min_length=1, max_length=400, description="why: kept in the ledger's journal")

    @field_validator("void")
    @classmethod
    def _one_way(cls, void: bool, info: ValidationInfo) -> bool:
        if (info.data.get("charge") is None) != void:
            raise ValueError("give either a charge or void, not both or neither")
        return void


class AccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account: str = Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$", description="the POSIX account at the site")


class HealthOut(_Out):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class _Query(BaseModel):
    # An unknown parameter is refused, not ignored: `?stat=running` must not quietly list every job.
    model_config = ConfigDict(extra="forbid")


class JobQuery(_Query):
    project: str | None = Field(default=None, max_length=63)
    site: str | None = Field(default=None, max_length=63)
    state: JobState | None = None
    id_prefix: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f-]{4,36}$",
        description="jobs whose id starts with this (at least 4 characters): find a job by the start of its id",
    )
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=512, description="next_cursor of the previous page")


class UsageQuery(_Query):
    site: str | None = Field(default=None, max_length=63)
    person: str | None = Field(default=None, max_length=255, description="one person's lines (PIs, quota admins)")
    start: IsoDateTime | None = Field(default=None, description="charges dated at or after this")
    end: IsoDateTime | None = Field(default=None, description="charges dated before this")
    period_start: IsoDateTime | None = Field(
        default=None, description="only the allocation period starting at this time (as in the balance)"
    )


class ReconciliationQuery(_Query):
    since: IsoDateTime = Field(description="compare charges and site records from this time")
    until: IsoDateTime | None = Field(default=None, description="up to this time (default: now)")

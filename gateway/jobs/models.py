"""The gateway's own job table, state history, outbox, idempotency keys and site account mappings."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db import Base, UTCDateTime
from gateway.ledger.models import Id


class JobState(StrEnum):
    ACCEPTED = "accepted"
    SUBMITTED = "submitted"
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    REJECTED = "rejected"
    # The site may have the job and we cannot tell (an answer lost after sending, a job the site forgot):
    # the reservation stays held, the forwarder keeps looking it up by its stamp, an alert fires, and an
    # operator ends it with `antenna admin resolve` (RESOLVED) unless it turns up at the site first.
    LOST = "lost"
    RESOLVED = "resolved"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.TIMEOUT,
        JobState.REJECTED,
        JobState.RESOLVED,
    }
)
AT_SITE_STATES = frozenset({JobState.SUBMITTED, JobState.PENDING, JobState.RUNNING})


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project: Mapped[str] = mapped_column(String(64))
    site: Mapped[str] = mapped_column(String(64))
    partition: Mapped[str] = mapped_column(String(64))
    person: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16))
    script: Mapped[str] = mapped_column(Text)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    unit: Mapped[str] = mapped_column(String(32))
    price: Mapped[int] = mapped_column(BigInteger)
    site_account: Mapped[str] = mapped_column(String(64))
    project_account: Mapped[str] = mapped_column(String(64))
    site_job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Asked to cancel while its submission may be at the site: found there it is cancelled there, else voided.
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_jobs_project_created", "project", "created_at", "id"),
        Index("ix_jobs_person_created", "person", "created_at", "id"),
        Index("ix_jobs_site_state", "site", "state"),
    )


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    detail: Mapped[str] = mapped_column(String(500), default="")


class OutboxEntry(Base):
    """Work for the forwarder. Claimed with a lease, so no lock is held while a site is called."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    site: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))  # submit | cancel
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime())
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_error: Mapped[str] = mapped_column(String(500), default="")
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_outbox_due", "done_at", "available_at"),)


class IdempotencyRecord(Base):
    """One per (person, key): the request's hash and the response first given."""

    __tablename__ = "idempotency_keys"

    person: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SiteAccount(Base):
    """(person, site) → the person's account at the site. Tokens never carry site usernames."""

    __tablename__ = "site_accounts"

    person: Mapped[str] = mapped_column(String(255), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    account: Mapped[str] = mapped_column(String(64))
    updated_by: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ProjectSite(Base):
    """(project, site) → the Slurm account the site charges, e.g. LUMI's ``project_465000001``."""

    __tablename__ = "project_sites"

    project: Mapped[str] = mapped_column(String(64), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_account: Mapped[str] = mapped_column(String(64))


class StatusSyncRun(Base):
    """The last status sync of a site by any replica, and the lease of the one running it now: each site is
    asked once per ``status_interval_seconds`` however many replicas run."""

    __tablename__ = "status_sync_runs"

    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

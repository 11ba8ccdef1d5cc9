"""The connector interface: how the gateway submits to, watches and settles jobs at one site.

Adapters (local, slurmrestd, ssh, ...) translate their transport's errors into the project's exceptions:
``SiteUnavailable`` when the site cannot be reached (retry later), ``SiteRejected`` when it refused the job
(final), ``SiteAuthFailed`` when it refused the credentials. An adapter never raises an HTTP exception.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from gateway.billing import Resources

#: Prefix of the site job name that carries the gateway's job id, so a job can be found again.
STAMP_PREFIX = "antenna-"


def stamp(job_id: str) -> str:
    return f"{STAMP_PREFIX}{job_id}"


def output_file(home: str, job_id: str, stream: str) -> str:
    """Where a job's ``stdout`` or ``stderr`` lands: named by the gateway's job id, not the site's. Slurm job ids
    are per cluster, and clusters can share a home file system (as at JSC, or in the test stack), so ``%j`` alone
    would let two sites' jobs write the same file."""
    return f"{home.rstrip('/')}/{stamp(job_id)}.{'out' if stream == 'stdout' else 'err'}"


class SiteState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    # A state this code does not know, or one that may still change (preempted, not yet requeued): the job's
    # state here stays as it was, and it is watched on.
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        return self not in (SiteState.PENDING, SiteState.RUNNING, SiteState.UNKNOWN)


@dataclass(frozen=True)
class SiteJobRequest:
    """Everything a site needs to run a job; the gateway chose account, partition and limits."""

    job_id: str
    account: str  # the person's site account (Unix user at the site)
    project_account: str  # the Slurm account the job is charged to at the site
    partition: str
    name: str
    script: str = field(repr=False)
    nodes: int
    cores: int
    memory_gb: int
    gpus: int
    time_limit_minutes: int
    environment: Mapping[str, str] = field(default_factory=dict, repr=False)
    working_directory: str | None = None


@dataclass(frozen=True)
class SiteJobStatus:
    """What the site reports about one job. ``allocated`` and ``elapsed_seconds`` settle the charge."""

    site_job_id: str
    state: SiteState
    started_at: datetime | None = None
    ended_at: datetime | None = None
    elapsed_seconds: int | None = None
    allocated: Resources | None = None
    exit_code: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class UsageRecord:
    """One finished job as the site's accounting saw it, for reconciliation."""

    site_job_id: str
    job_id: str | None  # the gateway's id read back from the stamp, None for jobs not sent by us
    project_account: str
    partition: str
    elapsed_seconds: int
    allocated: Resources
    ended_at: datetime


class Connector(ABC):
    """One site. Implementations are cheap to construct; network clients open lazily."""

    site: str

    @abstractmethod
    async def submit(self, request: SiteJobRequest) -> str:
        """Submit and return the site's job id. The job name carries ``stamp(request.job_id)``."""

    @abstractmethod
    async def find(self, *, account: str, job_id: str) -> str | None:
        """The site job id of an earlier submission of ``job_id`` (looked up by its stamp), if any."""

    @abstractmethod
    async def statuses(self, site_job_ids: Sequence[str]) -> dict[str, SiteJobStatus]:
        """The state of many jobs in ONE call to the site. Jobs the site no longer knows are absent."""

    @abstractmethod
    async def cancel(self, *, account: str, site_job_id: str) -> None:
        """Ask the site to cancel; cancelling a finished job is not an error."""

    @abstractmethod
    async def output(self, *, account: str, job_id: str, site_job_id: str, stream: str) -> str:
        """The ``stdout`` or ``stderr`` of the gateway's ``job_id`` (``site_job_id`` at the site) as text."""

    @abstractmethod
    async def usage(self, *, start: datetime, end: datetime, accounts: Sequence[str]) -> Sequence[UsageRecord]:
        """Finished jobs in ``[start, end)`` from the site's accounting, charged to one of ``accounts`` (the
        projects' Slurm accounts): the site's other projects are none of the gateway's business, and asking
        for them would cost the site's accounting database far more."""

    @abstractmethod
    async def health(self) -> None:
        """Raise SiteUnavailable with the reason when the site cannot take work."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Close network clients."""

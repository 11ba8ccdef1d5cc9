"""Slurm's JSON shapes, one parser per OpenAPI version, and what Slurm's error messages mean to the gateway.

The same data parser serves slurmrestd and the CLI's ``--json`` output (``squeue --json``, ``sacct --json``),
so both connectors share these parsers. Only ``v0.0.38`` (Slurm 22.05, what runs here) is implemented;
``v0.0.40+`` moved numbers into ``{"set": ..., "number": ...}`` objects and states into lists, and is added
with its own parser and recorded replies when a site runs it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from gateway.billing import Resources
from gateway.connectors.base import (
    STAMP_PREFIX,
    SiteJobRequest,
    SiteJobStatus,
    SiteState,
    UsageRecord,
    output_file,
    stamp,
)
from gateway.errors import AntennaError, SiteAuthFailed, SiteInvalidJob, SiteRejected, SiteUnavailable

_STATES = {
    "PENDING": SiteState.PENDING,
    "CONFIGURING": SiteState.PENDING,
    "REQUEUED": SiteState.PENDING,
    "REQUEUE_HOLD": SiteState.PENDING,
    "REQUEUE_FED": SiteState.PENDING,
    "SPECIAL_EXIT": SiteState.PENDING,  # held after a requeue with its special exit code
    "SUSPENDED": SiteState.RUNNING,
    "STOPPED": SiteState.RUNNING,
    "RESIZING": SiteState.RUNNING,
    "SIGNALING": SiteState.RUNNING,
    "STAGE_OUT": SiteState.RUNNING,
    "RUNNING": SiteState.RUNNING,
    "COMPLETING": SiteState.RUNNING,
    "COMPLETED": SiteState.COMPLETED,
    "FAILED": SiteState.FAILED,
    "NODE_FAIL": SiteState.FAILED,
    "BOOT_FAIL": SiteState.FAILED,
    "OUT_OF_MEMORY": SiteState.FAILED,
    "DEADLINE": SiteState.TIMEOUT,
    "TIMEOUT": SiteState.TIMEOUT,
    "CANCELLED": SiteState.CANCELLED,
    "REVOKED": SiteState.CANCELLED,  # a federated sibling ran it instead
    # PREEMPTED: final in accounting (the run ended); while the controller still shows it the job may be
    # requeued, so there it is UNKNOWN and the job is watched on (see state_of).
    "PREEMPTED": SiteState.CANCELLED,
}
_MEM = re.compile(r"^(?P<n>[\d.]+)(?P<u>[KMGTP]?)$")
_MEM_GB = {
    "": Decimal(1) / 1024,
    "K": Decimal(1) / 1024**2,
    "M": Decimal(1) / 1024,
    "G": Decimal(1),
    "T": Decimal(1024),
    "P": Decimal(1024**2),
}


@dataclass(frozen=True)
class AccountedJob:
    """One job as Slurm's accounting (slurmdbd) recorded it."""

    name: str
    user: str
    account: str
    partition: str
    submitted: int  # epoch seconds; tells apart records of a job id reused after a controller reset
    status: SiteJobStatus

    @property
    def settled(self) -> bool:
        """Final and complete: slurmdbd applies start and end messages asynchronously, so a short job can
        show as ended before its allocation (partition, TRES) is recorded. Charge only complete records."""
        if not self.status.state.is_final or self.status.ended_at is None:
            return False
        return self.status.started_at is None or (self.status.allocated is not None and self.partition != "")


class SlurmApi(Protocol):
    """What the connectors need from a version: the submit body, and parsers."""

    version: str

    def submit_body(self, request: SiteJobRequest, *, home: str) -> dict[str, Any]: ...

    def parse_submit(self, body: Mapping[str, Any]) -> str: ...

    def parse_jobs(self, body: Mapping[str, Any]) -> list[tuple[str, str, SiteJobStatus]]: ...

    def parse_accounting(self, body: Mapping[str, Any]) -> list[AccountedJob]: ...


def state_of(name: str, *, live: bool = False) -> SiteState:
    """The state Slurm names; ``live``: as the controller reports it, not accounting. A name this code does
    not know is UNKNOWN, never final: a job is never ended, nor charged, on a guess."""
    key = name.split(" ", maxsplit=1)[0].upper()
    if live and key == "PREEMPTED":
        return SiteState.UNKNOWN
    return _STATES.get(key, SiteState.UNKNOWN)


def resources_from_tres(tres: str) -> Resources | None:
    """``cpu=2,mem=2G,node=1,billing=2,gres/gpu=4`` → Resources; None when nothing is allocated yet."""
    fields = dict(part.split("=", 1) for part in tres.split(",") if "=" in part)
    if "cpu" not in fields:
        return None
    memory = Decimal(0)
    match = _MEM.match(fields.get("mem", "0"))
    if match:
        memory = Decimal(match.group("n")) * _MEM_GB[match.group("u")]
    gpus = sum(int(v) for k, v in fields.items() if k.startswith("gres/gpu") and ":" not in k and v.isdigit())
    return Resources(nodes=int(fields.get("node", "1")), cores=int(fields["cpu"]), memory_gb=memory, gpus=gpus)


def _time(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if isinstance(value, int) and value > 0 else None


class V0038:
    version = "v0.0.38"

    def submit_body(self, request: SiteJobRequest, *, home: str) -> dict[str, Any]:
        workdir = f"{home.rstrip('/')}/{request.working_directory}" if request.working_directory else home
        cpus_per_task = max(1, request.cores // request.nodes)
        job: dict[str, Any] = {
            "name": stamp(request.job_id),
            "comment": f"antenna job {request.job_id} ({request.name})",
            "partition": request.partition,
            "account": request.project_account,
            "nodes": request.nodes,
            "tasks": request.nodes,
            "cpus_per_task": cpus_per_task,
            "memory_per_node": max(1, request.memory_gb * 1024 // request.nodes),
            "time_limit": request.time_limit_minutes,
            "current_working_directory": workdir,
            # Named as the ssh connector names them, so either can serve output.
            "standard_output": output_file(home, request.job_id, "stdout"),
            "standard_error": output_file(home, request.job_id, "stderr"),
            "environment": {"PATH": "/usr/local/bin:/usr/bin:/bin", **request.environment},
        }
        if request.gpus:
            job["gpus"] = request.gpus  # 22.05 reads "gpus" as the job's total GPU count
        return {"script": request.script, "job": job}

    def parse_submit(self, body: Mapping[str, Any]) -> str:
        return str(body["job_id"])

    def parse_jobs(self, body: Mapping[str, Any]) -> list[tuple[str, str, SiteJobStatus]]:
        """(name, user, status) for each job slurmctld still knows."""
        out = []
        for job in body.get("jobs", []):
            state = state_of(str(job.get("job_state", "")), live=True)
            started, ended = _time(job.get("start_time")), _time(job.get("end_time"))
            allocated = resources_from_tres(str(job.get("tres_alloc_str") or ""))
            if state == SiteState.PENDING or (state.is_final and allocated is None):
                started = None  # not started, or cancelled while pending (start = end, nothing allocated)
            if not state.is_final:
                ended = None
            elapsed = None
            if started is not None:
                elapsed = max(0, int(((ended or datetime.now(UTC)) - started).total_seconds()))
            exit_code = job.get("exit_code")
            out.append(
                (
                    str(job.get("name", "")),
                    str(job.get("user_name", "")),
                    SiteJobStatus(
                        site_job_id=str(job["job_id"]),
                        state=state,
                        started_at=started,
                        ended_at=ended,
                        elapsed_seconds=elapsed,
                        allocated=allocated,
                        exit_code=exit_code if isinstance(exit_code, int) else None,
                        reason=str(job.get("state_reason", ""))
                        if job.get("state_reason") not in (None, "None")
                        else "",
                    ),
                )
            )
        return out

    def parse_accounting(self, body: Mapping[str, Any]) -> list[AccountedJob]:
        """Jobs from ``/slurmdb/v0.0.38/jobs`` or ``sacct --json``: elapsed and allocated TRES as recorded."""
        out = []
        for job in body.get("jobs") or []:
            timing = job.get("time") or {}
            tres: dict[str, int] = {}
            for item in (job.get("tres") or {}).get("allocated") or []:
                kind = str(item.get("type"))
                key = f"gres/{item.get('name')}" if kind == "gres" else kind
                tres[key] = int(item.get("count") or 0)
            allocated = None
            if tres.get("cpu"):
                allocated = Resources(
                    nodes=max(1, tres.get("node", 1)),
                    cores=tres["cpu"],
                    memory_gb=Decimal(tres.get("mem", 0)) / 1024,  # accounting counts memory in MiB
                    gpus=tres.get("gres/gpu", 0),
                )
            state = state_of(str((job.get("state") or {}).get("current", "")))
            started, ended = _time(timing.get("start")), _time(timing.get("end"))
            elapsed = int(timing.get("elapsed") or 0)
            if allocated is None and elapsed == 0:
                started = None  # cancelled while pending: accounting sets start = end but allocates nothing
            if not state.is_final:
                ended = None
            exit_code = (job.get("exit_code") or {}).get("return_code")
            reason = str((job.get("state") or {}).get("reason") or "")
            out.append(
                AccountedJob(
                    name=str(job.get("name", "")),
                    user=str(job.get("user", "")),
                    account=str(job.get("account", "")),
                    partition=str(job.get("partition", "")),
                    submitted=int(timing.get("submission") or 0),
                    status=SiteJobStatus(
                        site_job_id=str(job["job_id"]),
                        state=state,
                        started_at=started,
                        ended_at=ended,
                        elapsed_seconds=elapsed if started else None,
                        allocated=allocated,
                        exit_code=exit_code if isinstance(exit_code, int) else None,
                        reason="" if reason == "None" else reason,
                    ),
                )
            )
        return out


VERSIONS: dict[str, SlurmApi] = {"v0.0.38": V0038()}


def supported_version(version: str) -> str:
    """A pydantic validator for the options naming a parser: refused at configuration time, not at start."""
    if version not in VERSIONS:
        raise ValueError(f"{version} is not supported (supported: {', '.join(VERSIONS)})")
    return version


def merge_statuses(
    wanted: Iterable[str],
    live: Iterable[tuple[str, str, SiteJobStatus]],
    accounting: Iterable[AccountedJob],
    *,
    use_accounting: bool = True,
) -> dict[str, SiteJobStatus]:
    """The status of each wanted gateway job from the controller's view and the accounting records.

    A job is reported final only once accounting holds its complete record, so the charge is always priced
    from accounting's elapsed time and allocated TRES; until then an ended job is reported as still running
    (or pending, if it never started). Jobs the controller has forgotten come from accounting alone.
    """
    ids = set(wanted)
    controller = {s.site_job_id: (name, s) for name, _, s in live if s.site_job_id in ids}
    records: dict[str, AccountedJob] = {}
    for record in accounting:
        job_id = record.status.site_job_id
        if job_id not in ids or not record.name.startswith(STAMP_PREFIX):
            continue
        known = controller.get(job_id)
        if known is not None and known[0] != record.name:
            continue  # an older job with a reused id
        if job_id not in records or record.submitted > records[job_id].submitted:
            records[job_id] = record
    out: dict[str, SiteJobStatus] = {}
    for job_id in ids:
        found = records.get(job_id)
        known = controller.get(job_id)
        if known is not None and not known[0].startswith(STAMP_PREFIX):
            continue  # not a gateway job (a reused id)
        if known is not None and not known[1].state.is_final:
            out[job_id] = known[1]  # the controller's view of a job it still runs or holds wins: a requeued
            # job's earlier run is in accounting as ended (PREEMPTED, NODE_FAIL), yet the job goes on
        elif found is not None and found.settled:
            reason = found.status.reason or (known[1].reason if known else "")
            out[job_id] = dataclasses.replace(found.status, reason=reason)
        elif known is not None:
            status = known[1]
            if status.state.is_final and use_accounting and status.started_at is not None:
                waiting = SiteState.RUNNING if status.started_at is not None else SiteState.PENDING
                status = dataclasses.replace(status, state=waiting, ended_at=None, reason="awaiting accounting")
            out[job_id] = status
        elif found is not None:
            waiting = SiteState.RUNNING if found.status.started_at is not None else SiteState.PENDING
            out[job_id] = dataclasses.replace(found.status, state=waiting, ended_at=None)
    return out


def usage_records(jobs: Iterable[AccountedJob], start: datetime, end: datetime) -> list[UsageRecord]:
    """The settled jobs that ended in ``[start, end)``, as reconciliation reads them."""
    records = []
    for job in jobs:
        status = job.status
        if not job.settled or status.ended_at is None or status.allocated is None:
            continue
        if not (start <= status.ended_at < end):
            continue
        records.append(
            UsageRecord(
                site_job_id=status.site_job_id,
                job_id=job.name.removeprefix(STAMP_PREFIX) if job.name.startswith(STAMP_PREFIX) else None,
                project_account=job.account,
                partition=job.partition,
                elapsed_seconds=status.elapsed_seconds or 0,
                allocated=status.allocated,
                ended_at=status.ended_at,
            )
        )
    return records


def needs_accounting(wanted: Iterable[str], live: Iterable[tuple[str, str, SiteJobStatus]]) -> list[str]:
    """The wanted jobs the controller reports ended or no longer knows: what to ask accounting about."""
    known = {s.site_job_id: s for _, _, s in live}
    return sorted(
        (job_id for job_id in set(wanted) if job_id not in known or known[job_id].state.is_final),
        key=lambda j: (len(j), j),
    )


# --- what Slurm's messages mean ----------------------------------------------------------------------

_INVALID_JOB = (  # the job does not fit the site: the person's to fix
    "invalid partition",
    "requested node configuration",
    "time limit",
    "invalid gres",
    "invalid generic resource",
    "memory specification",
    "more processors requested than permitted",
    "node count specification invalid",
)
_REJECTIONS = (  # the site refuses the job for reasons of its own (associations, policy)
    "invalid account",
    "invalid qos",
    "job violates accounting/qos policy",
    "invalid job id",  # scancel/squeue for a job that does not exist
    "batch job submission failed",
)
_UNAVAILABLE = (
    "unable to contact slurm controller",
    "socket timed out",
    "connection refused",
    "slurm_persist_conn_open",
    "problem talking to the database",
    "slurmdbd",
    "resource temporarily unavailable",
    "try again",
    "transmission failure",
)
_AUTH = (
    "invalid user id",
    "access/permission denied",
    "access denied",
    "user not found",
    "unknown user",
    "zero bytes were transmitted",  # 22.05's answer when slurmctld refuses a token: a wrong key or unknown user
)


RATE_LIMIT_WAIT = 5  # seconds; Slurm's token bucket refills at 2 requests/s by default


def retry_after_seconds(header: str | None, default: int = RATE_LIMIT_WAIT) -> int:
    """A Retry-After header (seconds or an HTTP date) as whole seconds, bounded to [1, 3600]."""
    if not header:
        return default
    try:
        seconds = float(header)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(header) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return default
    return int(min(3600, max(1, seconds)))


def classify(site: str, message: str, *, default: type[AntennaError] = SiteRejected) -> AntennaError:
    """The project's exception for a Slurm error message (from slurmrestd's ``errors`` or a command's stderr).

    Unavailability is checked first: a refusal wrapped around a connection failure must be retried, not
    turned into a rejection of the person's job.
    """
    text = " ".join(message.split())[:400]
    lowered = text.lower()
    if "rate limit" in lowered:  # slurmctld's rl_enable: wait, do not retry at once
        return SiteUnavailable(f"{site}: {text}", retry_after=RATE_LIMIT_WAIT, rate_limited=True)
    if any(marker in lowered for marker in _UNAVAILABLE):
        return SiteUnavailable(f"{site}: {text}")
    if any(marker in lowered for marker in _AUTH):
        return SiteAuthFailed(f"{site}: {text}")
    if any(marker in lowered for marker in _INVALID_JOB):
        return SiteInvalidJob(f"{site}: {text}")
    if any(marker in lowered for marker in _REJECTIONS):
        return SiteRejected(f"{site}: {text}")
    return default(f"{site}: {text}")


def explained(exc: SiteRejected, request: SiteJobRequest) -> SiteRejected:
    """A submission refusal with what the person needs to act on it: which accounts and partition it was for."""
    if isinstance(exc, SiteAuthFailed) or "invalid account" not in exc.detail.lower():
        return exc
    return SiteRejected(
        f"{exc.detail}: the site account {request.account} is not associated with the project's Slurm account "
        f"{request.project_account} on partition {request.partition}"
    )

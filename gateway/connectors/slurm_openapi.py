"""Slurm REST API shapes, one parser per OpenAPI version (the shapes change between versions).

Only ``v0.0.38`` (Slurm 22.05, what runs here) is implemented; ``v0.0.40+`` moved numbers into
``{"set": ..., "number": ...}`` objects and states into lists, and is added with its own parser and
recorded replies when a site runs it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from gateway.billing import Resources
from gateway.connectors.base import SiteJobRequest, SiteJobStatus, SiteState, stamp

_STATES = {
    "PENDING": SiteState.PENDING,
    "CONFIGURING": SiteState.PENDING,
    "REQUEUED": SiteState.PENDING,
    "SUSPENDED": SiteState.RUNNING,
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


class SlurmApi(Protocol):
    """What the connector needs from a version: paths, the submit body, and parsers."""

    version: str

    def submit_body(self, request: SiteJobRequest, *, home: str) -> dict[str, Any]: ...

    def parse_submit(self, body: Mapping[str, Any]) -> str: ...

    def parse_jobs(self, body: Mapping[str, Any]) -> list[tuple[str, str, SiteJobStatus]]: ...


def state_of(name: str) -> SiteState:
    return _STATES.get(name.split(" ", maxsplit=1)[0].upper(), SiteState.FAILED)


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
            "standard_output": f"{home.rstrip('/')}/antenna-{request.job_id}.out",
            "standard_error": f"{home.rstrip('/')}/antenna-{request.job_id}.err",
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
            state = state_of(str(job.get("job_state", "")))
            started, ended = _time(job.get("start_time")), _time(job.get("end_time"))
            if state in (SiteState.PENDING,):
                started = ended = None
            elif not state.is_final:
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
                        allocated=resources_from_tres(str(job.get("tres_alloc_str") or "")),
                        exit_code=exit_code if isinstance(exit_code, int) else None,
                        reason=str(job.get("state_reason", ""))
                        if job.get("state_reason") not in (None, "None")
                        else "",
                    ),
                )
            )
        return out


VERSIONS: dict[str, SlurmApi] = {"v0.0.38": V0038()}

"""The ``local`` connector: jobs run as processes of the gateway's own user on this machine.

For ``antenna dev`` and tests only (production configs refuse it). It keeps Slurm's shape: the job name
carries the gateway's stamp, the time limit is enforced (the process group is killed, state ``timeout``),
stdout and stderr are captured to files, and each job's record is written to disk so a restarted gateway
can still answer for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from gateway.billing import Resources
from gateway.clock import Clock
from gateway.connectors.base import Connector, SiteJobRequest, SiteJobStatus, SiteState, UsageRecord, stamp
from gateway.errors import SiteRejected, SiteUnavailable
from gateway.jobs.spec import held_resources
from gateway.settings import PartitionSettings

_SAFE_ENV = ("PATH", "LANG", "LC_ALL", "TZ")


@dataclass
class _Record:
    site_job_id: str
    name: str
    account: str
    project_account: str
    partition: str
    state: str
    nodes: int
    cores: int
    memory_gb: str
    gpus: int
    time_limit_seconds: float
    submitted_at: str
    started_at: str | None = None
    ended_at: str | None = None
    exit_code: int | None = None


class LocalConnector(Connector):
    def __init__(
        self,
        site: str,
        *,
        workdir: Path,
        partitions: Mapping[str, PartitionSettings],
        clock: Clock,
        seconds_per_minute: float = 60.0,
    ) -> None:
        self.site = site
        self.workdir = workdir
        self.partitions = partitions
        self.clock = clock
        # Tests shrink minutes so that a time-limit kill takes seconds, not minutes.
        self.seconds_per_minute = seconds_per_minute
        self.available = True
        self._records: dict[str, _Record] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self._next = 1
        self._load()

    # --- persistence ------------------------------------------------------------------------------

    def _dir(self, site_job_id: str) -> Path:
        return self.workdir / site_job_id

    def _load(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for meta in sorted(self.workdir.glob("*/record.json")):
            record = _Record(**json.loads(meta.read_text()))
            if record.state in (SiteState.PENDING, SiteState.RUNNING):
                # Its process did not survive the restart of the gateway that ran it.
                record.state, record.ended_at, record.exit_code = SiteState.FAILED, self._now(), -1
                self._save(record)
            self._records[record.site_job_id] = record
            self._next = max(self._next, int(record.site_job_id) + 1)

    def _save(self, record: _Record) -> None:
        path = self._dir(record.site_job_id) / "record.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)))
        tmp.replace(path)

    def _now(self) -> str:
        return self.clock.now().isoformat()

    # --- the interface ----------------------------------------------------------------------------

    async def submit(self, request: SiteJobRequest) -> str:
        self._check_available()
        partition = self.partitions.get(request.partition)
        if partition is None:
            raise SiteRejected(f"invalid partition {request.partition!r}")
        site_job_id = str(self._next)
        self._next += 1
        folder = self._dir(site_job_id)
        folder.mkdir(parents=True)
        (folder / "script").write_text(request.script)
        held = held_resources(
            partition, nodes=request.nodes, cores=request.cores, memory_gb=Decimal(request.memory_gb), gpus=request.gpus
        )
        record = _Record(
            site_job_id=site_job_id,
            name=stamp(request.job_id),
            account=request.account,
            project_account=request.project_account,
            partition=request.partition,
            state=SiteState.PENDING.value,
            nodes=held.nodes,
            cores=held.cores,
            memory_gb=str(held.memory_gb),
            gpus=held.gpus,
            time_limit_seconds=request.time_limit_minutes * self.seconds_per_minute,
            submitted_at=self._now(),
        )
        self._records[site_job_id] = record
        self._save(record)
        env = {k: os.environ[k] for k in _SAFE_ENV if k in os.environ}
        env.update(request.environment)
        env.update({"SLURM_JOB_ID": site_job_id, "SLURM_JOB_NAME": record.name, "HOME": str(folder)})
        self._tasks[site_job_id] = asyncio.create_task(self._run(record, folder, env))
        return site_job_id

    async def _run(self, record: _Record, folder: Path, env: dict[str, str]) -> None:
        with (folder / "stdout").open("wb") as out, (folder / "stderr").open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                "/bin/bash",
                str(folder / "script"),
                cwd=folder,
                env=env,
                stdout=out,
                stderr=err,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
            self._processes[record.site_job_id] = process
            record.state, record.started_at = SiteState.RUNNING.value, self._now()
            self._save(record)
            try:
                code = await asyncio.wait_for(process.wait(), timeout=record.time_limit_seconds)
                if record.state == SiteState.RUNNING.value:
                    record.state = (SiteState.COMPLETED if code == 0 else SiteState.FAILED).value
                record.exit_code = code
            except TimeoutError:
                await self._kill(process)
                record.state, record.exit_code = SiteState.TIMEOUT.value, -signal.SIGKILL
            finally:
                record.ended_at = self._now()
                self._save(record)
                self._processes.pop(record.site_job_id, None)

    @staticmethod
    async def _kill(process: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def find(self, *, account: str, job_id: str) -> str | None:
        self._check_available()
        wanted = stamp(job_id)
        for record in self._records.values():
            if record.name == wanted and record.account == account:
                return record.site_job_id
        return None

    async def statuses(self, site_job_ids: Sequence[str]) -> dict[str, SiteJobStatus]:
        self._check_available()
        return {i: self._status(self._records[i]) for i in site_job_ids if i in self._records}

    def _status(self, record: _Record) -> SiteJobStatus:
        started = datetime.fromisoformat(record.started_at) if record.started_at else None
        ended = datetime.fromisoformat(record.ended_at) if record.ended_at else None
        elapsed = None
        if started is not None:
            elapsed = max(0, round(((ended or self.clock.now()) - started).total_seconds()))
        return SiteJobStatus(
            site_job_id=record.site_job_id,
            state=SiteState(record.state),
            started_at=started,
            ended_at=ended,
            elapsed_seconds=elapsed,
            exit_code=record.exit_code,
            allocated=Resources(
                nodes=record.nodes, cores=record.cores, memory_gb=Decimal(record.memory_gb), gpus=record.gpus
            ),
        )

    async def cancel(self, *, account: str, site_job_id: str) -> None:
        self._check_available()
        record = self._records.get(site_job_id)
        if record is None or record.account != account or SiteState(record.state).is_final:
            return
        record.state = SiteState.CANCELLED.value
        self._save(record)
        process = self._processes.get(site_job_id)
        if process is not None:
            await self._kill(process)

    async def output(self, *, account: str, job_id: str, site_job_id: str, stream: str) -> str:
        self._check_available()
        record = self._records.get(site_job_id)
        if record is None or record.account != account or stream not in ("stdout", "stderr"):
            raise SiteRejected(f"no output {stream} for job {site_job_id}")
        path = self._dir(site_job_id) / stream
        return path.read_text(errors="replace") if path.exists() else ""

    async def usage(self, *, start: datetime, end: datetime, accounts: Sequence[str]) -> Sequence[UsageRecord]:
        self._check_available()
        out = []
        for record in self._records.values():
            if record.project_account not in accounts:
                continue
            status = self._status(record)
            if status.ended_at is None or not (start <= status.ended_at < end) or status.allocated is None:
                continue
            out.append(
                UsageRecord(
                    site_job_id=record.site_job_id,
                    job_id=record.name.removeprefix("antenna-"),
                    project_account=record.project_account,
                    partition=record.partition,
                    elapsed_seconds=status.elapsed_seconds or 0,
                    allocated=status.allocated,
                    ended_at=status.ended_at,
                )
            )
        return out

    async def health(self) -> None:
        self._check_available()

    def _check_available(self) -> None:
        if not self.available:
            raise SiteUnavailable(f"site {self.site} is down (simulated)", not_sent=True)

    async def aclose(self) -> None:
        for site_job_id, process in list(self._processes.items()):
            await self._kill(process)
            record = self._records[site_job_id]
            record.state, record.ended_at = SiteState.FAILED.value, self._now()
            self._save(record)
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

"""The ``ssh`` connector: the Slurm CLI on a site's login node over asyncssh, as the person's own account.

Each account logs in with a key pair generated in memory and a short-lived user certificate that the secrets
store's SSH CA signs with the account as its only principal; one connection per account is pooled and
replaced before its certificate expires. Every remote command is an argument list quoted by ``command_line``
alone and job scripts travel over stdin, so nothing a person wrote is ever parsed by a shell. A status cycle
costs at most two commands whatever the number of jobs: ``squeue --json`` and, for the jobs that ended or
left the controller, one ``sacct --json --jobs=<ids>``.

The login shell of every site account must be POSIX (sh, bash, zsh): SSH hands a command to that shell as
one string, and ``command_line`` quotes for it.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import asyncssh
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from gateway.clock import Clock
from gateway.connectors.base import Connector, SiteJobRequest, SiteJobStatus, UsageRecord, output_file, stamp
from gateway.connectors.slurm_openapi import (
    VERSIONS,
    SlurmApi,
    classify,
    explained,
    merge_statuses,
    needs_accounting,
    supported_version,
    usage_records,
)
from gateway.errors import AntennaError, NotFound, SiteAuthFailed, SiteRejected, SiteUnavailable
from gateway.secrets import SecretStore

_ACCOUNT = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_JOB_ID = re.compile(r"^[0-9]+$")
_GATEWAY_ID = re.compile(r"^[0-9a-f-]{1,64}$")  # the gateway's job ids are UUIDs
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_FINAL_STATES = "CA,CD,DL,F,NF,OOM,PR,TO,BF"


def command_line(argv: Sequence[str]) -> str:
    """The one place a remote command line is built: every argument quoted for a POSIX shell.

    SSH carries a command as a single string that the account's login shell parses; ``shlex.join``
    single-quotes each argument that is not plainly safe, so nothing in it is expanded, substituted, split
    or globbed, newlines included. NUL cannot be carried in a command line and is refused.
    """
    if not argv:
        raise ValueError("an empty command")
    if any("\x00" in arg for arg in argv):
        raise ValueError("a command argument contains NUL")
    return shlex.join(argv)


def _public_key(text: str) -> str:
    try:
        asyncssh.import_public_key(text)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise ValueError("not an OpenSSH public key") from exc
    return text


class SshOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="the login node")
    port: int = Field(default=22, ge=1, le=65535)
    known_hosts: str | None = Field(default=None, description="a known_hosts file holding the login node's key")
    host_keys: list[Annotated[str, AfterValidator(_public_key)]] = Field(
        default_factory=list, description="the login node's public host keys"
    )
    status_account: str = Field(description="the site account that lists every gateway job each cycle")
    home_template: str = Field(default="/home/{account}", description="the account's project space")
    json_version: Annotated[str, AfterValidator(supported_version)] = Field(
        default="v0.0.38", description="data parser of the site's squeue/sacct --json"
    )
    accounting: bool = Field(default=True, description="settle from sacct (false: the site runs no slurmdbd)")
    key_type: Literal["ssh-ed25519", "ecdsa-sha2-nistp256"] = "ssh-ed25519"
    renew_before_seconds: int = Field(default=60, ge=5, description="log in anew this long before expiry")
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    command_timeout_seconds: float = Field(default=60.0, gt=0)
    max_sessions: int = Field(
        default=8, ge=1, le=64, description="commands at once per connection (sshd's MaxSessions is 10)"
    )
    idle_close_seconds: float = Field(default=600.0, gt=0, description="close a connection unused this long")
    output_max_bytes: int = Field(default=1024 * 1024, ge=1024, description="the tail of a job's output served")
    find_window_days: int = Field(default=14, ge=1, description="how far back accounting is searched by stamp")

    @model_validator(mode="after")
    def _host_key_pinned(self) -> SshOptions:
        if not self.known_hosts and not self.host_keys:
            raise ValueError("set known_hosts or host_keys: the login node's host key is always verified")
        return self


@dataclass
class _Login:
    """One pooled connection of one account, and the certificate it logged in with."""

    account: str
    conn: asyncssh.SSHClientConnection
    valid_before: float
    channels: asyncio.Semaphore
    busy: int = 0
    last_used: float = 0.0
    retired: bool = False

    def usable(self, now: float, renew_before: float) -> bool:
        return not self.retired and not self.conn.is_closed() and self.valid_before - now > renew_before


@dataclass(frozen=True)
class _Result:
    exit_status: int | None
    stdout: str
    stderr: str


class SshConnector(Connector):
    def __init__(self, site: str, options: SshOptions, *, secrets: SecretStore, clock: Clock) -> None:
        self.site = site
        self.options = options
        self.api: SlurmApi = VERSIONS[options.json_version]
        self.secrets = secrets
        self.clock = clock
        self._known_hosts: Any = options.known_hosts
        if options.host_keys:
            self._known_hosts = ([asyncssh.import_public_key(k) for k in options.host_keys], [], [])
        self._logins: dict[str, _Login] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def _home(self, account: str) -> str:
        return self.options.home_template.format(account=account).rstrip("/")

    # --- logins -----------------------------------------------------------------------------------

    async def _login(self, account: str) -> _Login:
        if not _ACCOUNT.match(account):
            raise SiteAuthFailed(f"{self.site}: {account!r} is not a valid site account name")
        lock = self._locks.setdefault(account, asyncio.Lock())
        async with lock:
            now = self._now()
            login = self._logins.get(account)
            if login is not None and login.usable(now, self.options.renew_before_seconds):
                return login
            fresh = await self._connect(account)
            self._logins[account] = fresh
            if login is not None:
                self._retire(login)
            self._close_idle(now)
            return fresh

    async def _connect(self, account: str) -> _Login:
        key = asyncssh.generate_private_key(self.options.key_type)
        public: bytes = key.export_public_key("openssh")
        text = await self.secrets.sign_ssh_key(site=self.site, account=account, public_key=public.decode())
        try:
            cert = asyncssh.import_certificate(text)
        except (ValueError, asyncssh.KeyImportError) as exc:
            raise SiteAuthFailed(f"{self.site}: the secrets store returned no valid certificate for {account}") from exc
        principals = list(getattr(cert, "principals", None) or [])  # X.509 certificates carry none
        if principals != [account]:
            raise SiteAuthFailed(
                f"{self.site}: the certificate issued for account {account} names {principals or 'any principal'}; "
                "the gateway only uses certificates whose one principal is the account"
            )
        valid_before = _valid_before(cert, self._now())
        until = datetime.fromtimestamp(valid_before, UTC).isoformat(timespec="seconds")
        if valid_before <= self._now():
            raise SiteAuthFailed(
                f"{self.site}: the SSH certificate issued for account {account} had already expired ({until}); "
                "check the clocks of the gateway and the secrets store"
            )
        try:
            async with asyncio.timeout(self.options.connect_timeout_seconds):
                conn = await asyncssh.connect(
                    self.options.host,
                    port=self.options.port,
                    username=account,
                    client_keys=[(key, cert)],
                    known_hosts=self._known_hosts,
                    agent_path=None,
                    config=[],
                    preferred_auth="publickey",
                    keepalive_interval=30,
                )
        except asyncssh.PermissionDenied as exc:
            raise SiteAuthFailed(
                f"{self.site}: the login node refused account {account} with a certificate valid until {until}: "
                "the account may not exist at the site, the certificate may have expired, "
                "or the site may not trust the gateway's SSH CA"
            ) from exc
        except asyncssh.HostKeyNotVerifiable as exc:
            raise SiteUnavailable(
                f"{self.site}: the login node's host key is not the configured one; refusing to log in",
                not_sent=True,
            ) from exc
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            raise SiteUnavailable(
                f"{self.site}: cannot reach the login node {self.options.host}:{self.options.port} "
                f"({type(exc).__name__})",
                not_sent=True,  # no session, so no command ran
            ) from exc
        return _Login(account, conn, valid_before, asyncio.Semaphore(self.options.max_sessions), last_used=self._now())

    def _retire(self, login: _Login) -> None:
        """Stop handing out ``login``; close it once its running commands are done."""
        login.retired = True
        if login.busy == 0:
            login.conn.close()

    def _close_idle(self, now: float) -> None:
        for account, login in list(self._logins.items()):
            if login.busy == 0 and now - login.last_used > self.options.idle_close_seconds:
                del self._logins[account]
                login.conn.close()

    # --- commands ---------------------------------------------------------------------------------

    async def _exec(self, account: str, argv: Sequence[str], *, stdin: str | None = None) -> _Result:
        login = await self._login(account)
        command = command_line(argv)
        login.busy += 1
        try:
            async with login.channels:
                try:
                    async with asyncio.timeout(self.options.command_timeout_seconds):
                        result = await login.conn.run(command, input=stdin, check=False, errors="replace")
                except asyncssh.ChannelOpenError as exc:
                    raise SiteUnavailable(
                        f"{self.site}: the login node refused a session ({exc.reason})", not_sent=True
                    ) from exc
                except (asyncssh.Error, OSError, TimeoutError) as exc:
                    self._retire(login)  # a broken or stuck connection is not reused
                    raise SiteUnavailable(
                        f"{self.site}: {argv[0]} on the login node did not complete ({type(exc).__name__})"
                    ) from exc
        finally:
            login.busy -= 1
            login.last_used = self._now()
            if login.retired and login.busy == 0:
                login.conn.close()
        return _Result(result.exit_status, str(result.stdout or ""), str(result.stderr or ""))

    async def _run(
        self,
        account: str,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        default: type[AntennaError] = SiteUnavailable,
    ) -> str:
        """Run one Slurm command as ``account``; its stdout, or the project's exception for its failure."""
        result = await self._exec(account, argv, stdin=stdin)
        if result.exit_status == 0:
            return result.stdout
        if result.exit_status is None:
            raise SiteUnavailable(f"{self.site}: {argv[0]} was killed on the login node")
        if result.exit_status in (126, 127):
            raise SiteUnavailable(f"{self.site}: {argv[0]} cannot run on the login node (not on its PATH?)")
        message = result.stderr.strip() or result.stdout.strip() or f"{argv[0]} exited with {result.exit_status}"
        raise classify(self.site, message, default=default)

    async def _json(self, account: str, argv: Sequence[str]) -> dict[str, Any]:
        text = await self._run(account, argv)
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise SiteUnavailable(f"{self.site}: {argv[0]} --json printed no JSON") from exc
        if not isinstance(body, dict):
            raise SiteUnavailable(f"{self.site}: {argv[0]} --json printed no JSON object")
        errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
        if errors:
            message = "; ".join(str(e.get("error") or e.get("description") or e) for e in errors)
            raise classify(self.site, message)
        return body

    # --- the interface ----------------------------------------------------------------------------

    def sbatch_argv(self, request: SiteJobRequest) -> list[str]:
        """The submission as an argument list; the script itself goes over stdin."""
        for name in request.environment:
            if not _ENV_NAME.match(name):
                raise SiteRejected(f"{self.site}: {name!r} is not a valid environment variable name")
        names = sorted(request.environment)
        home = self._home(request.account)
        workdir = f"{home}/{request.working_directory}" if request.working_directory else home
        comment = _CONTROL.sub(" ", f"antenna job {request.job_id} ({request.name})")[:250]
        argv = [
            "env",
            *(f"{name}={request.environment[name]}" for name in names),  # exported by name below
            "sbatch",
            "--parsable",
            "--ignore-pbs",  # the script's #PBS lines are comments, not options (the gateway refuses them too)
            f"--job-name={stamp(request.job_id)}",
            f"--comment={comment}",
            f"--partition={request.partition}",
            f"--account={request.project_account}",
            f"--nodes={request.nodes}",
            f"--ntasks={request.nodes}",
            f"--cpus-per-task={max(1, request.cores // request.nodes)}",
            f"--mem={max(1, request.memory_gb * 1024 // request.nodes)}M",
            f"--time={request.time_limit_minutes}",
            f"--chdir={workdir}",
            f"--output={output_file(home, request.job_id, 'stdout')}",
            f"--error={output_file(home, request.job_id, 'stderr')}",
            "--export=" + ",".join(["PATH", *names]),
        ]
        if request.gpus:
            argv.append(f"--gpus={request.gpus}")
        return argv

    async def submit(self, request: SiteJobRequest) -> str:
        try:
            out = await self._run(
                request.account, self.sbatch_argv(request), stdin=request.script, default=SiteRejected
            )
        except SiteRejected as exc:
            raise explained(exc, request) from exc
        site_job_id = out.strip().split(";", 1)[0]
        if not _JOB_ID.match(site_job_id):
            raise SiteUnavailable(f"{self.site}: sbatch printed no job id")
        return site_job_id

    async def find(self, *, account: str, job_id: str) -> str | None:
        name = stamp(job_id)
        out = await self._run(
            account,
            ["squeue", "--noheader", "--states=all", f"--name={name}", f"--user={account}", "--format=%i"],
        )
        for line in out.split():
            if _JOB_ID.match(line):
                return line
        out = await self._run(
            account,
            [
                "sacct",
                "--noheader",
                "--parsable2",
                "--allocations",
                f"--name={name}",
                f"--user={account}",
                f"--starttime=now-{self.options.find_window_days}days",
                "--format=JobID,JobName",
            ],
        )
        for line in out.splitlines():
            site_job_id, _, found = line.partition("|")
            if found == name and _JOB_ID.match(site_job_id):
                return site_job_id
        return None

    async def statuses(self, site_job_ids: Sequence[str]) -> dict[str, SiteJobStatus]:
        if not site_job_ids:
            return {}
        account = self.options.status_account
        # squeue --json of Slurm 22.05 ignores filters and lists every job: one call, filtered here.
        live = self.api.parse_jobs(await self._json(account, ["squeue", "--json"]))
        accounting = []
        missing = needs_accounting(site_job_ids, live) if self.options.accounting else []
        if missing:
            body = await self._json(account, ["sacct", "--json", "--allusers", f"--jobs={','.join(missing)}"])
            accounting = self.api.parse_accounting(body)
        return merge_statuses(site_job_ids, live, accounting, use_accounting=self.options.accounting)

    async def cancel(self, *, account: str, site_job_id: str) -> None:
        if not _JOB_ID.match(site_job_id):
            raise SiteRejected(f"{self.site}: {site_job_id!r} is not a Slurm job id")
        try:
            await self._run(account, ["scancel", site_job_id], default=SiteRejected)
        except SiteRejected as exc:
            lowered = exc.detail.lower()
            if not isinstance(exc, SiteAuthFailed) and ("already complet" in lowered or "invalid job id" in lowered):
                return
            raise

    async def output(self, *, account: str, job_id: str, site_job_id: str, stream: str) -> str:
        if not _JOB_ID.match(site_job_id) or not _GATEWAY_ID.match(job_id) or stream not in ("stdout", "stderr"):
            raise SiteRejected(f"{self.site}: no such output {stream!r} of job {site_job_id!r}")
        path = output_file(self._home(account), job_id, stream)
        # The last output_max_bytes: a job's output can be far larger than a response should be.
        result = await self._exec(account, ["tail", f"--bytes={self.options.output_max_bytes}", "--", path])
        if result.exit_status == 0:
            return result.stdout
        if "no such file" in result.stderr.lower():
            raise NotFound(f"job {site_job_id} has no {stream} at {self.site} (yet)")
        raise classify(self.site, result.stderr.strip() or "tail failed", default=SiteUnavailable)

    async def usage(self, *, start: datetime, end: datetime, accounts: Sequence[str]) -> Sequence[UsageRecord]:
        if not accounts:
            return []
        now = self._now()
        # Relative times: the login node reads absolute ones in its own time zone.
        since = max(0, int(now - start.timestamp()) + 60)
        until = max(0, int(now - end.timestamp()) - 60)
        body = await self._json(
            self.options.status_account,
            [
                "sacct",
                "--json",
                "--allusers",  # every member's jobs, in the projects' accounts only
                f"--accounts={','.join(accounts)}",
                f"--starttime=now-{since}seconds",
                f"--endtime=now-{until}seconds" if until else "--endtime=now",
                f"--state={_FINAL_STATES}",
            ],
        )
        return usage_records(self.api.parse_accounting(body), start, end)

    async def health(self) -> None:
        out = await self._run(self.options.status_account, ["scontrol", "ping"])
        if "UP" not in out:
            raise SiteUnavailable(f"{self.site}: {' '.join(out.split())[:200] or 'slurmctld is not up'}")

    async def aclose(self) -> None:
        logins, self._logins = list(self._logins.values()), {}
        for login in logins:
            login.conn.close()
        for login in logins:
            await login.conn.wait_closed()


def _valid_before(cert: asyncssh.SSHCertificate, now: float) -> float:
    """The end of the certificate's validity. asyncssh keeps it private; without it, assume one minute."""
    value = getattr(cert, "_valid_before", None)
    return float(value) if isinstance(value, int) else now + 60.0

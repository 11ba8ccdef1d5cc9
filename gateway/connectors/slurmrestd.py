"""The ``slurmrestd`` connector: Slurm's REST API over httpx, acting as the person's own site account.

Tokens are HS256 JWTs (``sun``, ``iat``, ``exp``) minted by the gateway with the cluster's key, read from
the secrets store; each is short-lived and cached until shortly before it expires. Status is one call to
``/jobs`` for all of the gateway's jobs at the site.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import jwt
from pydantic import BaseModel, ConfigDict, Field

from gateway.billing import Resources
from gateway.clock import Clock
from gateway.connectors.base import STAMP_PREFIX, Connector, SiteJobRequest, SiteJobStatus, UsageRecord, stamp
from gateway.connectors.slurm_openapi import VERSIONS, SlurmApi, state_of
from gateway.errors import ConfigurationError, SiteAuthFailed, SiteRejected, SiteUnavailable
from gateway.secrets import SecretStore

_REJECTIONS = (
    "invalid partition",
    "invalid account",
    "invalid qos",
    "requested node configuration",
    "time limit",
    "invalid gres",
    "invalid generic resource",
    "memory specification",
)


class SlurmrestdOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="slurmrestd base URL")
    api_version: str = "v0.0.38"
    status_account: str = Field(description="the site account whose token reads the job list")
    home_template: str = Field(default="/home/{account}", description="the account's project space")
    token_lifetime_seconds: int = Field(default=300, ge=30, le=3600)
    timeout_seconds: float = Field(default=10.0, gt=0)
    key_field: str = Field(default="jwt_key", description="field of the site's credentials holding the key")
    missing_lookup_limit: int = Field(default=20, ge=0, description="jobs aged out of slurmctld looked up per cycle")


class SlurmrestdConnector(Connector):
    def __init__(
        self,
        site: str,
        options: SlurmrestdOptions,
        *,
        secrets: SecretStore,
        clock: Clock,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if options.api_version not in VERSIONS:
            raise ConfigurationError(
                f"sites.{site}.options.api_version: {options.api_version} is not supported "
                f"(supported: {', '.join(VERSIONS)})"
            )
        self.site = site
        self.options = options
        self.api: SlurmApi = VERSIONS[options.api_version]
        self.secrets = secrets
        self.clock = clock
        self.http = http or httpx.AsyncClient(base_url=options.url, timeout=options.timeout_seconds)
        self._tokens: dict[tuple[str, int], tuple[str, float]] = {}

    # --- transport --------------------------------------------------------------------------------

    async def _token(self, account: str) -> str:
        credentials = await self.secrets.site_credentials(self.site)
        cache_key = (account, credentials.version)  # a rotated key invalidates cached tokens at once
        cached = self._tokens.get(cache_key)
        now = self.clock.now().timestamp()
        if cached is not None and cached[1] - now > 30:
            return cached[0]
        raw = credentials.get(self.options.key_field)
        key = base64.b64decode(raw) if not raw.startswith("raw:") else raw[4:].encode()
        expires = int(now) + self.options.token_lifetime_seconds
        token = jwt.encode({"sun": account, "iat": int(now), "exp": expires}, key, algorithm="HS256")
        self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
        self._tokens[cache_key] = (token, float(expires))
        return token

    async def _call(
        self, method: str, path: str, account: str, *, missing_ok: bool = False, **kwargs: Any
    ) -> dict[str, Any]:
        headers = {"X-SLURM-USER-NAME": account, "X-SLURM-USER-TOKEN": await self._token(account)}
        try:
            response = await self.http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise SiteUnavailable(f"{self.site}: slurmrestd unreachable ({type(exc).__name__})") from exc
        if response.status_code == 429:
            retry = int(response.headers.get("Retry-After", "5") or 5)
            raise SiteUnavailable(f"{self.site}: rate limited by Slurm", retry_after=retry)
        if response.status_code == 404 and missing_ok:  # slurmdbd answers 404 when no job matches
            return {}
        if response.status_code in (401, 403):
            raise SiteAuthFailed(f"{self.site}: the site refused the credentials for account {account}")
        try:
            body: dict[str, Any] = response.json()
        except ValueError as exc:
            raise SiteUnavailable(f"{self.site}: slurmrestd answered {response.status_code} without JSON") from exc
        errors = [e for e in body.get("errors", []) if isinstance(e, dict)]
        if response.status_code >= 400 or errors:
            message = "; ".join(str(e.get("error") or e.get("description") or e) for e in errors) or response.text[:200]
            lowered = message.lower()
            if any(marker in lowered for marker in _REJECTIONS):
                raise SiteRejected(f"{self.site}: {message}")
            if "user" in lowered and ("invalid" in lowered or "not found" in lowered or "unknown" in lowered):
                raise SiteAuthFailed(f"{self.site}: {message}")
            if "zero bytes were transmitted" in lowered:
                # Slurm 22.05's answer when slurmctld refuses the token: a wrong key or an unknown account.
                raise SiteAuthFailed(f"{self.site}: the controller refused the token for account {account}")
            if "unable to contact slurm controller" in lowered:
                raise SiteUnavailable(f"{self.site}: slurmctld unreachable")
            if response.status_code >= 500 and not errors:
                raise SiteUnavailable(f"{self.site}: slurmrestd answered {response.status_code}")
            raise SiteRejected(f"{self.site}: {message}")
        return body

    def _path(self, tail: str, *, db: bool = False) -> str:
        return f"/{'slurmdb' if db else 'slurm'}/{('db' if db else '') + self.api.version}/{tail}"

    # --- the interface ----------------------------------------------------------------------------

    async def submit(self, request: SiteJobRequest) -> str:
        home = self.options.home_template.format(account=request.account)
        body = self.api.submit_body(request, home=home)
        reply = await self._call("POST", self._path("job/submit"), request.account, json=body)
        return self.api.parse_submit(reply)

    async def find(self, *, account: str, job_id: str) -> str | None:
        wanted = stamp(job_id)
        reply = await self._call("GET", self._path("jobs"), self.options.status_account)
        for name, user, status in self.api.parse_jobs(reply):
            if name == wanted and user == account:
                return status.site_job_id
        reply = await self._call(
            "GET",
            self._path("jobs", db=True),
            self.options.status_account,
            missing_ok=True,
            params={"job_name": wanted},
        )
        for job in reply.get("jobs", []):
            if job.get("name") == wanted and job.get("user") == account:
                return str(job["job_id"])
        return None

    async def statuses(self, site_job_ids: Sequence[str]) -> dict[str, SiteJobStatus]:
        reply = await self._call("GET", self._path("jobs"), self.options.status_account)
        wanted = set(site_job_ids)
        found = {
            s.site_job_id: s
            for name, _, s in self.api.parse_jobs(reply)
            if s.site_job_id in wanted and name.startswith(STAMP_PREFIX)
        }
        # Jobs slurmctld has already forgotten (MinJobAge) come from accounting, a bounded number a cycle.
        for site_job_id in sorted(wanted - found.keys())[: self.options.missing_lookup_limit]:
            db = await self._call(
                "GET", self._path(f"job/{site_job_id}", db=True), self.options.status_account, missing_ok=True
            )
            status = _from_accounting(db)
            if status is not None:
                found[site_job_id] = status
        return found

    async def cancel(self, *, account: str, site_job_id: str) -> None:
        try:
            await self._call("DELETE", self._path(f"job/{site_job_id}"), account)
        except SiteRejected as exc:
            if "already completed" in exc.detail.lower() or "invalid job id" in exc.detail.lower():
                return
            raise

    async def output(self, *, account: str, site_job_id: str, stream: str) -> str:
        raise SiteRejected(
            f"{self.site}: slurmrestd serves no job output; configure the ssh connector for output at this site"
        )

    async def usage(self, *, start: datetime, end: datetime) -> Sequence[UsageRecord]:
        reply = await self._call("GET", self._path("jobs", db=True), self.options.status_account)
        records = []
        for job in reply.get("jobs", []):
            status = _from_accounting({"jobs": [job]})
            if status is None or status.ended_at is None or status.allocated is None:
                continue
            if not (start <= status.ended_at < end):
                continue
            name = str(job.get("name", ""))
            records.append(
                UsageRecord(
                    site_job_id=status.site_job_id,
                    job_id=name.removeprefix(STAMP_PREFIX) if name.startswith(STAMP_PREFIX) else None,
                    project_account=str(job.get("account", "")),
                    partition=str(job.get("partition", "")),
                    elapsed_seconds=status.elapsed_seconds or 0,
                    allocated=status.allocated,
                    ended_at=status.ended_at,
                )
            )
        return records

    async def health(self) -> None:
        await self._call("GET", self._path("ping"), self.options.status_account)

    async def aclose(self) -> None:
        await self.http.aclose()


def _from_accounting(body: dict[str, Any]) -> SiteJobStatus | None:
    """A job from ``/slurmdb/.../job/{id}``: elapsed and allocated TRES as accounting recorded them."""
    jobs = body.get("jobs") or []
    if not jobs:
        return None
    job = jobs[0]
    timing = job.get("time", {})
    tres = {
        t.get("type") if t.get("type") != "gres" else f"gres/{t.get('name')}": t.get("count") or 0
        for t in job.get("tres", {}).get("allocated", [])
    }
    allocated = None
    if tres.get("cpu"):
        allocated = Resources(
            nodes=int(tres.get("node", 1)),
            cores=int(tres["cpu"]),
            memory_gb=Decimal(int(tres.get("mem", 0))) / 1024,
            gpus=int(tres.get("gres/gpu", 0)),
        )
    start, finish = timing.get("start") or 0, timing.get("end") or 0
    return SiteJobStatus(
        site_job_id=str(job["job_id"]),
        state=state_of(str(job.get("state", {}).get("current", ""))),
        started_at=datetime.fromtimestamp(start, UTC) if start else None,
        ended_at=datetime.fromtimestamp(finish, UTC) if finish else None,
        elapsed_seconds=int(timing.get("elapsed") or 0),
        allocated=allocated,
        exit_code=job.get("exit_code", {}).get("return_code"),
    )

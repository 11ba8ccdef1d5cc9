"""The ``slurmrestd`` connector: Slurm's REST API over httpx, acting as the person's own site account.

Tokens are HS256 JWTs (``sun``, ``iat``, ``exp``) minted by the gateway with the cluster's key, read from
the secrets store; each is short-lived and cached until shortly before it expires. A status cycle costs at
most two calls whatever the number of jobs: ``/slurm/.../jobs`` (the controller's view) and, for the jobs
that ended or left the controller, one ``/slurmdb/.../jobs?step=<ids>`` (accounting, which settles charges).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import jwt
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from gateway.clock import Clock
from gateway.connectors.base import Connector, SiteJobRequest, SiteJobStatus, UsageRecord, stamp
from gateway.connectors.slurm_openapi import (
    VERSIONS,
    SlurmApi,
    classify,
    explained,
    merge_statuses,
    needs_accounting,
    retry_after_seconds,
    supported_version,
    usage_records,
)
from gateway.connectors.ssh import SshConnector, SshOptions
from gateway.errors import SiteAuthFailed, SiteRejected, SiteUnavailable
from gateway.secrets import SecretStore, SiteCredentials


class SlurmrestdOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="slurmrestd base URL")
    api_version: Annotated[str, AfterValidator(supported_version)] = "v0.0.38"
    status_account: str = Field(description="the site account whose token reads the job list")
    home_template: str = Field(default="/home/{account}", description="the account's project space")
    token_lifetime_seconds: int = Field(default=300, ge=30, le=3600)
    timeout_seconds: float = Field(default=10.0, gt=0)
    key_field: str = Field(default="jwt_key", description="field of the site's credentials holding the key")
    accounting: bool = Field(default=True, description="settle from slurmdbd's records (false: no slurmdbd)")
    output_ssh: SshOptions | None = Field(
        default=None, description="the site's login node, to read job output (slurmrestd serves none)"
    )


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
        self.site = site
        self.options = options
        self.api: SlurmApi = VERSIONS[options.api_version]
        self.secrets = secrets
        self.clock = clock
        self.http = http or httpx.AsyncClient(base_url=options.url, timeout=options.timeout_seconds)
        self._tokens: dict[tuple[str, int], tuple[str, float]] = {}
        self._output = (
            SshConnector(site, options.output_ssh, secrets=secrets, clock=clock) if options.output_ssh else None
        )

    # --- transport --------------------------------------------------------------------------------

    def _token(self, account: str, credentials: SiteCredentials) -> str:
        cache_key = (account, credentials.version)  # a rotated key invalidates cached tokens at once
        cached = self._tokens.get(cache_key)
        now = self.clock.now().timestamp()
        if cached is not None and cached[1] - now > 30:
            return cached[0]
        raw = credentials.values.get(self.options.key_field)
        if not raw:
            raise SiteAuthFailed(f"{self.site}: the secrets store holds no {self.options.key_field} for this site")
        try:
            # Whitespace is not part of a key: `base64 key.bin` wraps lines and ends with a newline.
            key = (
                base64.b64decode("".join(raw.split()), validate=True)
                if not raw.startswith("raw:")
                else raw[4:].encode()
            )
        except binascii.Error as exc:
            # The operator's to fix in Vault: jobs wait (the site looks down) rather than being refused.
            raise SiteUnavailable(
                f"{self.site}: the secrets store's {self.options.key_field} is not base64 (nor raw:...)"
            ) from exc
        expires = int(now) + self.options.token_lifetime_seconds
        token = jwt.encode({"sun": account, "iat": int(now), "exp": expires}, key, algorithm="HS256")
        self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
        self._tokens[cache_key] = (token, float(expires))
        return token

    async def _call(
        self, method: str, path: str, account: str, *, missing_ok: bool = False, **kwargs: Any
    ) -> dict[str, Any]:
        credentials = await self.secrets.site_credentials(self.site)
        try:
            return await self._call_with(credentials, method, path, account, missing_ok=missing_ok, **kwargs)
        except SiteAuthFailed as refused:
            # After a key rotation the site may switch before our cache expires: read the key again and,
            # if Vault holds a newer one, retry once with it. A refused request did nothing at the site.
            # Only for refusals of the token itself: one person's unknown account must not cost a Vault read.
            if not refused.extra.get("token_refused"):
                raise
            self.secrets.invalidate(self.site)
            fresh = await self.secrets.site_credentials(self.site)
            if fresh.version == credentials.version:
                raise
            return await self._call_with(fresh, method, path, account, missing_ok=missing_ok, **kwargs)

    async def _call_with(
        self,
        credentials: SiteCredentials,
        method: str,
        path: str,
        account: str,
        *,
        missing_ok: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        headers = {"X-SLURM-USER-NAME": account, "X-SLURM-USER-TOKEN": self._token(account, credentials)}
        try:
            response = await self.http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            # No connection (or none free) means nothing was sent; a cut or a timeout after sending may have run.
            not_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
            raise SiteUnavailable(
                f"{self.site}: slurmrestd unreachable ({type(exc).__name__})", not_sent=not_sent
            ) from exc
        if response.status_code == 429:
            retry = retry_after_seconds(response.headers.get("Retry-After"))
            raise SiteUnavailable(
                f"{self.site}: rate limited by Slurm (retry after {retry} s)",
                retry_after=retry,
                rate_limited=True,
                not_sent=True,
            )
        if response.status_code == 404 and missing_ok:
            return {}
        if response.status_code in (401, 403):
            raise SiteAuthFailed(
                f"{self.site}: the site refused the credentials for account {account}", token_refused=True
            )
        try:
            body: dict[str, Any] = response.json()
        except ValueError as exc:
            raise SiteUnavailable(f"{self.site}: slurmrestd answered {response.status_code} without JSON") from exc
        errors = [e for e in body.get("errors", []) if isinstance(e, dict)]
        if response.status_code >= 400 or errors:
            message = "; ".join(str(e.get("error") or e.get("description") or e) for e in errors) or response.text[:200]
            if missing_ok and "nothing found" in message.lower():  # slurmdbd: no job matches the query
                return {}
            if "zero bytes were transmitted" in message.lower():
                # Slurm 22.05's answer when slurmctld refuses the token: a wrong key or an unknown account.
                raise SiteAuthFailed(
                    f"{self.site}: the controller refused the token for account {account} "
                    "(the account is unknown at the site, or the cluster key is wrong)",
                    token_refused=True,
                )
            # slurmrestd answers Slurm's own refusals ("Invalid account", ...) with a 500 and the message in
            # errors[]: classify recognises those. Any other 5xx is the site failing, not refusing: a job that
            # may have run must never be voided on it.
            default = SiteUnavailable if response.status_code >= 500 else SiteRejected
            raise classify(self.site, message, default=default)
        return body

    def _path(self, tail: str, *, db: bool = False) -> str:
        # slurmrestd serves accounting as /slurmdb/v0.0.38/... (the plugin is named dbv0.0.38).
        return f"/{'slurmdb' if db else 'slurm'}/{self.api.version}/{tail}"

    # --- the interface ----------------------------------------------------------------------------

    async def submit(self, request: SiteJobRequest) -> str:
        home = self.options.home_template.format(account=request.account)
        body = self.api.submit_body(request, home=home)
        try:
            reply = await self._call("POST", self._path("job/submit"), request.account, json=body)
        except SiteRejected as exc:
            raise explained(exc, request) from exc
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
        live = self.api.parse_jobs(reply)
        accounting = []
        missing = needs_accounting(site_job_ids, live) if self.options.accounting else []
        if missing:
            # One accounting call for every job that ended or left the controller, never one per job.
            db = await self._call(
                "GET",
                self._path("jobs", db=True) + "?step=" + quote(",".join(missing), safe=""),
                self.options.status_account,
                missing_ok=True,
            )
            accounting = self.api.parse_accounting(db)
        return merge_statuses(site_job_ids, live, accounting, use_accounting=self.options.accounting)

    async def cancel(self, *, account: str, site_job_id: str) -> None:
        try:
            await self._call("DELETE", self._path(f"job/{site_job_id}"), account)
        except SiteRejected as exc:
            if "already complet" in exc.detail.lower() or "invalid job id" in exc.detail.lower():
                return
            raise

    async def output(self, *, account: str, job_id: str, site_job_id: str, stream: str) -> str:
        if self._output is None:
            raise SiteRejected(
                f"{self.site}: slurmrestd serves no job output and no login node (output_ssh) is configured"
            )
        return await self._output.output(account=account, job_id=job_id, site_job_id=site_job_id, stream=stream)

    async def usage(self, *, start: datetime, end: datetime, accounts: Sequence[str]) -> Sequence[UsageRecord]:
        if not accounts:
            return []
        # v0.0.38 answers any query on /slurmdb/.../jobs (account, start_time, ...) with a 500, so the
        # filtering happens here; a newer API version can ask slurmdbd for just these accounts and window.
        reply = await self._call("GET", self._path("jobs", db=True), self.options.status_account)
        wanted = set(accounts)
        return [r for r in usage_records(self.api.parse_accounting(reply), start, end) if r.project_account in wanted]

    async def health(self) -> None:
        await self._call("GET", self._path("ping"), self.options.status_account)

    async def aclose(self) -> None:
        await self.http.aclose()
        if self._output is not None:
            await self._output.aclose()

"""The Vault/OpenBao adapter of the secrets interface: the gateway's token kept alive in the background, site
credentials from KV v2, SSH certificates from the SSH engine, dynamic database credentials.

hvac blocks, so every call runs in a worker thread. Every value is cached with a deadline: refreshed after
``refresh_fraction`` of its life, and still served while Vault is down until the deadline itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import hvac
import hvac.exceptions

from gateway.clock import Clock, SystemClock
from gateway.errors import SecretsUnavailable, SiteAuthFailed
from gateway.secrets.base import SecretStore, SiteCredentials
from gateway.secrets.database import DatabaseCredentials
from gateway.secrets.layout import parse_reference, site_path
from gateway.secrets.metrics import Event, Reason, SecretsMetrics
from gateway.secrets.settings import VaultClientOptions
from gateway.secrets.ssh import CertificateCache, check_account, key_fingerprint
from gateway.secrets.vault_auth import Authenticator, Token, VaultFailure, classify, make_client
from gateway.settings import VaultSettings

log = logging.getLogger("gateway.secrets")

T = TypeVar("T")
_OUTAGE = (Reason.SEALED, Reason.UNREACHABLE, Reason.TLS, Reason.NOT_INITIALIZED)
_TRANSIENT = (*_OUTAGE, Reason.ERROR)


class _PrincipalRefused(VaultFailure):
    """The site's SSH role does not allow the account: a mapping problem, not an outage."""


@dataclass
class _Cached:
    value: Any
    refresh_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class VaultStatus:
    """What ``/readyz`` can show: ``reason`` is empty when ``ok``."""

    ok: bool
    reason: Reason
    detail: str
    token_expires_at: datetime | None


class VaultSecretStore(SecretStore):
    """``SecretStore`` over hvac. ``start()`` (or the first use) starts the upkeep task inside the running
    event loop; ``aclose()`` stops it and revokes the token (and with it the database leases).

    ``sites`` names the configured sites, so ``check()`` can ask Vault whether the policy lets the
    gateway read each one's credentials. ``background=False`` leaves upkeep to explicit ``maintain()``
    calls (tests drive it with a fake clock).
    """

    def __init__(
        self,
        settings: VaultSettings,
        *,
        options: VaultClientOptions | None = None,
        clock: Clock | None = None,
        metrics: SecretsMetrics | None = None,
        sites: Sequence[str] = (),
        revoke_on_close: bool = True,
        background: bool = True,
    ) -> None:
        self._settings = settings
        self._options = options or VaultClientOptions()
        self._clock = clock or SystemClock()
        self.metrics = metrics or SecretsMetrics()
        self._sites_to_check = tuple(sites)
        self._revoke_on_close = revoke_on_close
        self._background = background
        self._closed = False
        self._auth = Authenticator(settings, self._options)
        self._client = make_client(settings, self._options)
        self._bare = make_client(settings, self._options)  # unauthenticated calls (health)
        self._token: Token | None = None
        self._login_ttl = 0
        self._login_lock = asyncio.Lock()
        self._failures = 0
        self._retry_at: datetime | None = None
        self._last_failure: VaultFailure | None = None
        # After Vault was found sealed/unreachable, answer from that for a few seconds instead of making
        # every request wait for a timeout.
        self._outage: tuple[datetime, VaultFailure] | None = None
        self._site_cache: dict[str, _Cached] = {}
        self._site_locks: dict[str, asyncio.Lock] = {}
        # What is being served stale or refused, and why: each outage is logged once, not per request.
        self._degraded: dict[str, tuple[str, Reason]] = {}
        self._certs = CertificateCache(self._options.refresh_fraction)
        self._db: _Cached | None = None
        self._db_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: VaultSettings,
        *,
        clock: Clock | None = None,
        options: VaultClientOptions | None = None,
        metrics: SecretsMetrics | None = None,
        sites: Sequence[str] = (),
    ) -> VaultSecretStore:
        """The production store; nothing touches the network until the first use or ``start()``."""
        return cls(settings, options=options, clock=clock, metrics=metrics, sites=sites)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Log in (a failure is logged and retried, never raised) and start the upkeep task.

        Optional: the first use of the store starts the task too.
        """
        self._start_upkeep()
        with contextlib.suppress(VaultFailure):
            await self._ensure_token()

    def _start_upkeep(self) -> None:
        if not self._background or self._closed:
            return
        loop = asyncio.get_running_loop()
        task = self._task
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        self._wake = asyncio.Event()  # a store used from a new event loop (e.g. asyncio.run at start-up)
        self._task = loop.create_task(self._run(), name="vault-upkeep")

    async def aclose(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._revoke_on_close and self._token is not None and self._settings.auth_method != "token":
            # Revoking the token also revokes the database leases it holds.
            try:
                await asyncio.to_thread(self._client.auth.token.revoke_self)
            except Exception as exc:  # best effort at shutdown; the token expires anyway
                log.warning("vault token revocation at shutdown failed (%s)", classify(exc)[0])
            self._drop_token()

    async def _run(self) -> None:
        while True:
            delay = await self.maintain()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def maintain(self) -> float:
        """One upkeep step: log in, renew the token (or check it still works), refresh database
        credentials when due.

        Never raises; returns the seconds until the next step (backing off after failures).
        """
        try:
            now = self._clock.now()
            token = self._token
            if token is None or not self._usable(token, now):
                await self._ensure_token()
            else:
                refresh_at = token.refresh_at(self._options.refresh_fraction)
                if refresh_at is not None and now >= refresh_at:
                    await self._renew()
                elif not await self._token_alive():
                    # Revoked behind our back; its database leases went with it.
                    self.metrics.record(Event.RENEW_FAILURE, Reason.TOKEN_INVALID)
                    log.warning("vault refused the gateway's token (revoked or expired); logging in again")
                    self._drop_token()
                    await self._ensure_token()
            if self._settings.database_role and (self._db is None or now >= self._db.refresh_at):
                await self.database_credentials()
        except (VaultFailure, SecretsUnavailable):
            pass  # logged and counted where it happened
        except Exception:
            log.exception("vault upkeep step failed unexpectedly; retrying with backoff")
            self._back_off(VaultFailure(Reason.ERROR, "unexpected error in the upkeep step"))
        return self._next_delay()

    def _next_delay(self) -> float:
        now = self._clock.now()
        deadlines: list[datetime] = []
        if self._retry_at is not None:
            deadlines.append(self._retry_at)
        elif self._token is not None:
            refresh_at = self._token.refresh_at(self._options.refresh_fraction)
            if refresh_at is not None:
                deadlines.append(refresh_at)
        if self._db is not None and self._retry_at is None:
            deadlines.append(self._db.refresh_at)
        if not deadlines:
            return 300.0
        return min(max((min(deadlines) - now).total_seconds(), 1.0), 300.0)

    # -- the token -------------------------------------------------------------------------------

    @staticmethod
    def _usable(token: Token, now: datetime) -> bool:
        expires_at = token.expires_at
        return expires_at is None or now < expires_at

    @property
    def token_expires_at(self) -> datetime | None:
        return self._token.expires_at if self._token is not None else None

    def _set_token(self, token: Token) -> None:
        self._token = token
        self._client.token = token.value
        expires_at = token.expires_at
        self.metrics.token_expires_at = expires_at.timestamp() if expires_at is not None else None
        self._failures = 0
        self._retry_at = None
        self._last_failure = None

    def _drop_token(self) -> None:
        """Forget the token. Database leases die with it, so fetch new database credentials now."""
        self._token = None
        self._client.token = ""
        self.metrics.token_expires_at = None
        if self._db is not None:
            self._db.refresh_at = self._clock.now()
        self._wake.set()

    def _back_off(self, failure: VaultFailure) -> float:
        self._failures += 1
        opts = self._options
        delay = float(
            min(
                opts.login_backoff_initial_seconds * 2.0 ** (self._failures - 1),
                opts.login_backoff_max_seconds,
            )
        )
        self._retry_at = self._clock.now() + timedelta(seconds=delay)
        self._last_failure = failure
        return delay

    async def _ensure_token(self) -> None:
        self._start_upkeep()
        token = self._token
        if token is not None and self._usable(token, self._clock.now()):
            return
        async with self._login_lock:
            token = self._token
            if token is not None and self._usable(token, self._clock.now()):
                return
            await self._login()

    async def _login(self) -> None:
        now = self._clock.now()
        last = self._last_failure
        if self._retry_at is not None and now < self._retry_at and last is not None:
            # Backing off: answer with the last reason instead of hitting Vault on every request.
            raise VaultFailure(last.reason, last.detail)
        try:
            token = await asyncio.to_thread(self._auth.login, now)
        except Exception as exc:
            failure = exc if isinstance(exc, VaultFailure) else VaultFailure(*classify(exc))
            delay = self._back_off(failure)
            self.metrics.record(Event.LOGIN_FAILURE, failure.reason)
            log.warning(
                "vault login failed (method=%s, reason=%s): %s; next attempt in %.0fs",
                self._settings.auth_method,
                failure.reason,
                failure.detail,
                delay,
            )
            if failure is exc:
                raise
            raise failure from exc
        self._login_ttl = token.ttl
        self._set_token(token)
        self.metrics.record(Event.LOGIN)
        log.info(
            "vault login succeeded (method=%s, policies=%s, ttl=%ss, renewable=%s)",
            self._settings.auth_method,
            ",".join(token.policies),
            token.ttl,
            token.renewable,
        )

    async def _renew(self) -> None:
        token = self._token
        assert token is not None
        if token.renewable:
            try:
                response = await asyncio.to_thread(self._client.auth.token.renew_self)
            except Exception as exc:
                reason, detail = classify(exc)
                self.metrics.record(Event.RENEW_FAILURE, reason)
                if reason in _TRANSIENT:
                    delay = self._back_off(VaultFailure(reason, detail))
                    log.warning(
                        "vault token renewal failed (reason=%s): %s; retrying in %.0fs",
                        reason,
                        detail,
                        delay,
                    )
                    raise VaultFailure(reason, detail) from exc
                log.warning("vault token renewal refused (reason=%s): %s; logging in again", reason, detail)
            else:
                ttl = int(response["auth"]["lease_duration"])
                if ttl >= self._login_ttl * (1 - self._options.refresh_fraction):
                    token.ttl = ttl
                    token.issued_at = self._clock.now()
                    self._set_token(token)
                    self.metrics.record(Event.RENEW)
                    return
                log.info("vault token is close to its maximum TTL; logging in again")
        self._drop_token()
        await self._ensure_token()

    async def _token_alive(self) -> bool:
        """Whether Vault still accepts our token (a 403 may mean the token died or the policy said no)."""
        try:
            await asyncio.to_thread(self._client.auth.token.lookup_self)
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
            return False
        except Exception as exc:
            raise VaultFailure(*classify(exc)) from exc
        return True

    async def _call(self, what: str, fn: Callable[[hvac.Client], T]) -> T:
        """Run ``fn`` with the gateway's token; log in again once if Vault says the token is dead."""
        outage = self._outage
        if outage is not None and self._clock.now() < outage[0]:
            raise VaultFailure(outage[1].reason, outage[1].detail)
        for attempt in (1, 2):
            await self._ensure_token()
            try:
                result = await asyncio.to_thread(fn, self._client)
            except VaultFailure:
                raise
            except Exception as exc:
                reason, detail = classify(exc)
                if reason in _OUTAGE:
                    until = self._clock.now() + timedelta(seconds=self._options.fail_fast_seconds)
                    self._outage = (until, VaultFailure(reason, detail))
                if reason not in (Reason.PERMISSION_DENIED, Reason.TOKEN_INVALID):
                    raise VaultFailure(reason, f"{what}: {detail}") from exc
                if await self._token_alive():
                    self.metrics.record(Event.PERMISSION_DENIED, Reason.PERMISSION_DENIED)
                    log.warning("vault permission denied %s: the gateway's policy does not allow it", what)
                    raise VaultFailure(
                        Reason.PERMISSION_DENIED,
                        f"{what}: permission denied by the gateway's Vault policy",
                    ) from exc
                if attempt == 2:
                    raise VaultFailure(Reason.TOKEN_INVALID, f"{what}: token refused") from exc
                self.metrics.record(Event.RENEW_FAILURE, Reason.TOKEN_INVALID)
                log.warning("vault refused the gateway's token (revoked or expired); logging in again")
                self._drop_token()
            else:
                self._outage = None
                return result
        raise AssertionError("unreachable")

    # -- cached values ---------------------------------------------------------------------------

    def _serve_stale(self, entry: _Cached | None, now: datetime, failure: VaultFailure, what: str) -> Any:
        if entry is not None and now < entry.expires_at:
            self.metrics.record(Event.STALE_SERVED, failure.reason)
            # Ask Vault again in a few seconds, not on every request in between.
            retry_at = now + timedelta(seconds=self._options.fail_fast_seconds)
            entry.refresh_at = min(retry_at, entry.expires_at)
            if self._degraded.get(what) != ("stale", failure.reason):  # log once per outage
                self._degraded[what] = ("stale", failure.reason)
                log.warning(
                    "vault unavailable (reason=%s): serving cached %s until %s: %s",
                    failure.reason,
                    what,
                    entry.expires_at.isoformat(),
                    failure.detail,
                )
            return entry.value
        self.metrics.record(Event.UNAVAILABLE, failure.reason)
        if self._degraded.get(what) != ("unavailable", failure.reason):
            self._degraded[what] = ("unavailable", failure.reason)
            log.warning(
                "vault unavailable (reason=%s) and no valid cached %s: %s",
                failure.reason,
                what,
                failure.detail,
            )
        raise SecretsUnavailable(
            f"cannot get {what} from Vault: {failure.detail}", reason=str(failure.reason)
        ) from failure

    def _recovered(self, what: str) -> None:
        if self._degraded.pop(what, None) is not None:
            log.info("vault: %s served fresh again", what)

    def _fresh(self, entry: _Cached | None, now: datetime) -> bool:
        if entry is not None and now < entry.refresh_at:
            self.metrics.record(Event.CACHE_HIT)
            return True
        return False

    def _deadlines(self, now: datetime, seconds: float) -> tuple[datetime, datetime]:
        life = timedelta(seconds=seconds)
        return now + life * self._options.refresh_fraction, now + life

    # -- site credentials ------------------------------------------------------------------------

    def _read_kv(self, client: hvac.Client, *, path: str) -> tuple[int, dict[str, str]]:
        mount = self._settings.kv_mount
        response = client.secrets.kv.v2.read_secret_version(path=path, mount_point=mount, raise_on_deleted_version=True)
        data = response["data"]
        values: dict[str, str] = {}
        for name, value in (data.get("data") or {}).items():
            if not isinstance(value, str):
                raise VaultFailure(Reason.MISCONFIGURED, f"{mount}/{path}: field {name!r} is not a string")
            values[name] = value
        return int(data["metadata"]["version"]), values

    async def _cached_kv(self, path: str, *, site: str, what: str) -> SiteCredentials:
        """The KV v2 secret at ``path`` (inside the kv mount), cached as described in the module."""
        entry = self._site_cache.get(path)
        if self._fresh(entry, self._clock.now()):
            assert entry is not None
            creds: SiteCredentials = entry.value
            return creds
        async with self._site_locks.setdefault(path, asyncio.Lock()):
            now = self._clock.now()
            entry = self._site_cache.get(path)
            if self._fresh(entry, now):
                assert entry is not None
                creds = entry.value
                return creds
            self.metrics.record(Event.CACHE_MISS)
            try:
                version, values = await self._call(
                    f"reading {self._settings.kv_mount}/{path}", partial(self._read_kv, path=path)
                )
            except VaultFailure as failure:
                stale: SiteCredentials = self._serve_stale(entry, now, failure, what)
                return stale
            refresh_at, expires_at = self._deadlines(now, self._settings.secret_ttl_seconds)
            creds = SiteCredentials(site=site, version=version, values=values, expires_at=expires_at)
            if entry is not None and entry.value.version != version:
                log.info("vault: %s rotated to version %d", what, version)
            self._site_cache[path] = _Cached(creds, refresh_at, expires_at)
            self._recovered(what)
            return creds

    async def site_credentials(self, site: str) -> SiteCredentials:
        return await self._cached_kv(site_path(site), site=site, what=f"credentials of site {site}")

    async def resolve_reference(self, reference: str) -> str:
        """The value a configuration reference ``vault:<path>#<field>`` names (path inside the kv
        mount, e.g. ``vault:sites/lumi/robot#client_secret``); cached like site credentials."""
        path, field = parse_reference(reference)
        parts = path.split("/")
        site = parts[1] if len(parts) > 1 and parts[0] == "sites" else ""
        creds = await self._cached_kv(path, site=site, what=f"secret {path}")
        if field not in creds.values:
            raise SecretsUnavailable(
                f"{self._settings.kv_mount}/{path} has no field {field!r}",
                reason=str(Reason.MISCONFIGURED),
            )
        return creds.get(field)

    def invalidate(self, site: str) -> None:
        """Read ``site``'s secrets again on next use (e.g. after the site refused them); the cached
        values stay usable as a fallback until their TTL."""
        prefix = site_path(site)
        now = self._clock.now()
        for path, entry in self._site_cache.items():
            if path == prefix or path.startswith(prefix + "/"):
                entry.refresh_at = now

    # -- SSH certificates ------------------------------------------------------------------------

    def _sign(self, client: hvac.Client, *, site: str, account: str, public_key: str) -> str:
        path = f"{self._settings.ssh_mount}/sign/{site}"
        try:
            response = client.write_data(
                path,
                data={
                    "public_key": public_key,
                    "valid_principals": account,
                    "cert_type": "user",
                    "ttl": f"{self._options.ssh_cert_ttl_seconds}s",
                },
            )
        except hvac.exceptions.InvalidRequest as exc:
            errors = " ".join(str(e) for e in (exc.errors or []))
            if "valid_principals" in errors or "allow any principals" in errors:
                raise _PrincipalRefused(
                    Reason.PERMISSION_DENIED,
                    f"Vault's SSH role for site {site} does not allow account {account}; "
                    "add the mapping to the role (antenna vault sync-accounts)",
                ) from exc
            if "nknown role" in errors:
                raise VaultFailure(Reason.MISCONFIGURED, f"no SSH signing role for site {site} at {path}") from exc
            raise
        return str(response["data"]["signed_key"]).strip()

    async def sign_ssh_key(self, *, site: str, account: str, public_key: str) -> str:
        check_account(site, account)
        key = (site, account, key_fingerprint(public_key))
        now = self._clock.now()
        cached = self._certs.fresh(key, now)
        if cached is not None:
            self.metrics.record(Event.CACHE_HIT)
            return cached
        what = f"an SSH certificate for {account} at site {site}"
        try:
            certificate = await self._call(
                f"signing at {self._settings.ssh_mount}/sign/{site}",
                partial(self._sign, site=site, account=account, public_key=public_key),
            )
        except _PrincipalRefused as refused:
            self.metrics.record(Event.SSH_REFUSED, refused.reason)
            log.warning("vault refused to sign: %s", refused.detail)
            raise SiteAuthFailed(refused.detail) from refused
        except VaultFailure as failure:
            usable = self._certs.usable(key, now)
            entry = _Cached(usable[0], now, usable[1]) if usable is not None else None
            stale: str = self._serve_stale(entry, now, failure, what)
            return stale
        self._certs.put(key, certificate)
        self._recovered(what)
        self.metrics.record(Event.SSH_SIGNED)
        return certificate

    # -- database credentials --------------------------------------------------------------------

    def _read_database(self, client: hvac.Client) -> dict[str, Any]:
        response: dict[str, Any] = client.secrets.database.generate_credentials(
            name=self._settings.database_role, mount_point=self._settings.database_mount
        )
        return response

    async def database_credentials(self) -> DatabaseCredentials:
        """Current PostgreSQL credentials for ``vault.database_role``, fetched anew when due."""
        if not self._settings.database_role:
            raise SecretsUnavailable("vault.database_role is not set", reason=str(Reason.MISCONFIGURED))
        if self._fresh(self._db, self._clock.now()):
            assert self._db is not None
            creds: DatabaseCredentials = self._db.value
            return creds
        async with self._db_lock:
            now = self._clock.now()
            entry = self._db
            if self._fresh(entry, now):
                assert entry is not None
                creds = entry.value
                return creds
            what = "database credentials"
            mount, role = self._settings.database_mount, self._settings.database_role
            try:
                response = await self._call(f"reading {mount}/creds/{role}", self._read_database)
            except VaultFailure as failure:
                stale: DatabaseCredentials = self._serve_stale(entry, now, failure, what)
                return stale
            return self._keep_database(response, now)

    def _keep_database(self, response: dict[str, Any], now: datetime) -> DatabaseCredentials:
        lease = int(response["lease_duration"])
        creds = DatabaseCredentials(
            username=str(response["data"]["username"]),
            password=str(response["data"]["password"]),
            lease_id=str(response["lease_id"]),
            lease_seconds=lease,
            issued_at=now,
        )
        refresh_at, expires_at = self._deadlines(now, lease)
        self._db = _Cached(creds, refresh_at, expires_at)
        self._recovered("database credentials")
        log.info("vault issued database credentials for %s (lease %ss)", creds.username, lease)
        return creds

    def database_credentials_blocking(self) -> DatabaseCredentials:
        """``database_credentials()`` for start-up code that runs before the event loop (building the
        engine, migrations). Blocks; never call it from the event loop."""
        if not self._settings.database_role:
            raise SecretsUnavailable("vault.database_role is not set", reason=str(Reason.MISCONFIGURED))
        now = self._clock.now()
        mount, role = self._settings.database_mount, self._settings.database_role
        try:
            token = self._token
            if token is None or not self._usable(token, now):
                token = self._auth.login(now)
                self._login_ttl = token.ttl
                self._set_token(token)
                self.metrics.record(Event.LOGIN)
            response = self._read_database(self._client)
        except Exception as exc:
            failure = exc if isinstance(exc, VaultFailure) else VaultFailure(*classify(exc))
            self.metrics.record(Event.UNAVAILABLE, failure.reason)
            raise SecretsUnavailable(
                f"cannot get database credentials from Vault ({mount}/creds/{role}): {failure.detail}",
                reason=str(failure.reason),
            ) from exc
        return self._keep_database(response, now)

    def current_database_credentials(self) -> DatabaseCredentials:
        """The last database credentials while their lease lasts; no I/O (safe in ``do_connect``)."""
        entry = self._db
        if entry is None or self._clock.now() >= entry.expires_at:
            self.metrics.record(Event.UNAVAILABLE, Reason.NOT_FOUND)
            raise SecretsUnavailable("no valid database credentials from Vault", reason=str(Reason.NOT_FOUND))
        creds: DatabaseCredentials = entry.value
        return creds

    # -- readiness -------------------------------------------------------------------------------

    def _health(self) -> None:
        response = self._bare.sys.read_health_status(method="GET")
        if isinstance(response, Mapping):
            if response.get("sealed"):
                raise VaultFailure(Reason.SEALED, "Vault is sealed")
            return
        status = int(response.status_code)
        if status == 503:
            raise VaultFailure(Reason.SEALED, "Vault is sealed")
        if status == 501:
            raise VaultFailure(Reason.NOT_INITIALIZED, "Vault is not initialized")
        if status not in (429, 472, 473):  # standbys can forward our requests
            raise VaultFailure(Reason.ERROR, f"Vault health check answered HTTP {status}")

    def _capabilities(self, client: hvac.Client, paths: list[str]) -> dict[str, list[str]]:
        response = client.write_data("sys/capabilities-self", data={"paths": paths})
        data = response.get("data", response)
        return {path: list(data.get(path, [])) for path in paths}

    async def status(self) -> VaultStatus:
        """Whether Vault can serve new secrets now, and if not why (sealed, unreachable, denied...)."""
        try:
            try:
                await asyncio.to_thread(self._health)
            except VaultFailure:
                raise
            except Exception as exc:
                raise VaultFailure(*classify(exc)) from exc
            self._outage = None  # Vault answers again: no need to wait out the fail-fast window
            await self._ensure_token()
            if not await self._token_alive():
                log.warning("vault refused the gateway's token (revoked or expired); logging in again")
                self._drop_token()
                await self._ensure_token()
            if self._sites_to_check:
                paths = [f"{self._settings.kv_mount}/data/{site_path(site)}" for site in self._sites_to_check]
                caps = await self._call("checking the gateway's capabilities", partial(self._capabilities, paths=paths))
                denied = [p for p, granted in caps.items() if not {"read", "root"} & set(granted)]
                if denied:
                    detail = f"the gateway's policy does not allow reading {', '.join(denied)}"
                    return VaultStatus(False, Reason.PERMISSION_DENIED, detail, self.token_expires_at)
        except VaultFailure as failure:
            return VaultStatus(False, failure.reason, failure.detail, self.token_expires_at)
        return VaultStatus(True, Reason.NONE, "ok", self.token_expires_at)

    async def check(self) -> None:
        status = await self.status()
        if not status.ok:
            raise SecretsUnavailable(f"Vault: {status.detail}", reason=str(status.reason))

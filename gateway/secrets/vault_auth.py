"""How the gateway proves who it is to Vault: AppRole with a response-wrapped secret-id, Kubernetes
service-account tokens, or a plain token (development). Blocking hvac calls; the store runs them in threads.

Errors leave as ``VaultFailure`` carrying a ``Reason`` and a detail that never holds a secret.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions

from gateway.secrets.metrics import Reason
from gateway.secrets.settings import VaultClientOptions
from gateway.settings import VaultSettings

log = logging.getLogger("gateway.secrets")


class VaultFailure(Exception):
    """A Vault call failed; ``detail`` is safe to log and to show."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _vault_errors(exc: hvac.exceptions.VaultError) -> str:
    errors = exc.errors if isinstance(exc.errors, list) else [exc.errors] if exc.errors else []
    text = "; ".join(str(e).replace("\n", " ").strip() for e in errors)
    return text[:300] or type(exc).__name__


def classify(exc: BaseException) -> tuple[Reason, str]:
    """The reason and a safe description of an hvac/requests error."""
    if isinstance(exc, VaultFailure):
        return exc.reason, exc.detail
    if isinstance(exc, hvac.exceptions.VaultDown):
        return Reason.SEALED, "Vault is sealed or down"
    if isinstance(exc, hvac.exceptions.VaultNotInitialized):
        return Reason.NOT_INITIALIZED, "Vault is not initialized"
    if isinstance(exc, hvac.exceptions.Forbidden):
        return Reason.PERMISSION_DENIED, f"permission denied ({_vault_errors(exc)})"
    if isinstance(exc, hvac.exceptions.Unauthorized):
        return Reason.TOKEN_INVALID, f"unauthorized ({_vault_errors(exc)})"
    if isinstance(exc, hvac.exceptions.InvalidPath):
        return Reason.NOT_FOUND, "nothing stored at that path"
    if isinstance(exc, hvac.exceptions.VaultError):
        return Reason.ERROR, _vault_errors(exc)
    chain: list[BaseException] = []
    cursor: BaseException | None = exc
    while cursor is not None and len(chain) < 10:
        chain.append(cursor)
        cursor = cursor.__cause__ or cursor.__context__
    if any(isinstance(e, ssl.SSLError) or type(e).__name__ == "SSLError" for e in chain):
        return Reason.TLS, "TLS verification of Vault's certificate failed (check vault.ca_cert)"
    if isinstance(exc, OSError):  # requests' errors are OSErrors: refused, reset, timed out
        return Reason.UNREACHABLE, f"Vault is unreachable ({type(exc).__name__})"
    return Reason.ERROR, type(exc).__name__


@dataclass
class Token:
    """The gateway's Vault token and its lifetime as last reported by Vault (ttl 0: never expires)."""

    value: str = field(repr=False)
    accessor: str
    ttl: int
    renewable: bool
    issued_at: datetime
    policies: tuple[str, ...] = ()

    @property
    def expires_at(self) -> datetime | None:
        return self.issued_at + timedelta(seconds=self.ttl) if self.ttl > 0 else None

    def refresh_at(self, fraction: float) -> datetime | None:
        return self.issued_at + timedelta(seconds=self.ttl * fraction) if self.ttl > 0 else None


def make_client(settings: VaultSettings, options: VaultClientOptions, token: str = "") -> hvac.Client:
    """An hvac client for ``settings.address``; never falls back to VAULT_* variables or ~/.vault-token."""
    verify: str | bool = settings.ca_cert or True
    return hvac.Client(url=settings.address, token=token, verify=verify, timeout=options.request_timeout_seconds)


def _token_from_auth(auth: dict[str, Any], now: datetime) -> Token:
    return Token(
        value=str(auth["client_token"]),
        accessor=str(auth.get("accessor", "")),
        ttl=int(auth.get("lease_duration", 0)),
        renewable=bool(auth.get("renewable", False)),
        issued_at=now,
        policies=tuple(auth.get("policies") or ()),
    )


def _read_file(path: str, what: str) -> str:
    if not path:
        raise VaultFailure(Reason.MISCONFIGURED, f"no {what} file is configured")
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise VaultFailure(Reason.MISCONFIGURED, f"cannot read the {what} file {path}") from exc


class Authenticator:
    """Logs in with the configured method. Holds the unwrapped AppRole secret-id in memory so that the
    gateway can log in again after its token is revoked or reaches its maximum TTL."""

    def __init__(self, settings: VaultSettings, options: VaultClientOptions) -> None:
        self._settings = settings
        self._options = options
        self._secret_id: str | None = None
        # Wrapping tokens already presented (by digest), with what to say if the file still holds one.
        self._seen_wrapping: dict[str, VaultFailure] = {}

    def login(self, now: datetime) -> Token:
        method = self._settings.auth_method
        if method == "approle":
            return self._approle(now)
        if method == "kubernetes":
            return self._kubernetes(now)
        return self._token(now)

    # -- AppRole ---------------------------------------------------------------------------------

    def expected_creation_path(self) -> str:
        opts = self._options
        return f"auth/{opts.approle_mount}/role/{opts.approle_role}/secret-id"

    def _approle(self, now: datetime) -> Token:
        if not self._settings.role_id:
            raise VaultFailure(Reason.MISCONFIGURED, "vault.role_id is empty")
        if self._secret_id is None:
            self._secret_id = self._unwrap_secret_id()
        client = make_client(self._settings, self._options)
        try:
            response = client.auth.approle.login(
                role_id=self._settings.role_id,
                secret_id=self._secret_id,
                use_token=False,
                mount_point=self._options.approle_mount,
            )
        except hvac.exceptions.InvalidRequest as exc:
            # Vault says "invalid role or secret ID": expired, used up or destroyed. Forget it, so the next
            # attempt looks for a newly delivered wrapped secret-id.
            self._secret_id = None
            raise VaultFailure(
                Reason.SECRET_ID_INVALID,
                f"AppRole login refused ({_vault_errors(exc)}): the secret-id is expired, used up or "
                "revoked; deliver a new wrapped secret-id to vault.wrapped_secret_id_file",
            ) from exc
        except Exception as exc:
            raise VaultFailure(*classify(exc)) from exc
        return _token_from_auth(response["auth"], now)

    def _unwrap_secret_id(self) -> str:
        wrapping = _read_file(self._settings.wrapped_secret_id_file, "wrapped secret-id")
        digest = hashlib.sha256(wrapping.encode()).hexdigest()
        seen = self._seen_wrapping.get(digest)
        if seen is not None:
            # Never present the same wrapping token twice; wait for the deploy step to deliver a new one.
            raise VaultFailure(seen.reason, f"{seen.detail} (the file still holds that wrapping token)")
        try:
            return self._check_and_unwrap(wrapping)
        except VaultFailure as failure:
            if failure.reason in (Reason.WRAPPING_REFUSED, Reason.SECRET_ID_INVALID):
                self._seen_wrapping[digest] = failure
            raise

    def _check_and_unwrap(self, wrapping: str) -> str:
        client = make_client(self._settings, self._options)
        try:
            # Unauthenticated; tells where the wrapped response was created without consuming it.
            lookup = client.adapter.post("/v1/sys/wrapping/lookup", json={"token": wrapping})
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden) as exc:
            log.error(  # noqa: TRY400 - Vault's answer says it all; no traceback wanted
                "vault wrapped secret-id refused: the wrapping token is invalid, expired or already "
                "used; if the deploy step did not use it, it may have been intercepted"
            )
            raise VaultFailure(
                Reason.WRAPPING_REFUSED, "the wrapping token is invalid, expired or already used"
            ) from exc
        except Exception as exc:
            raise VaultFailure(*classify(exc)) from exc
        creation_path = str(lookup["data"].get("creation_path", ""))
        expected = self.expected_creation_path()
        if creation_path != expected:
            log.error(
                "vault wrapped secret-id refused: created at %r, expected %r; not unwrapping it",
                creation_path,
                expected,
            )
            raise VaultFailure(
                Reason.WRAPPING_REFUSED,
                f"the wrapping token was created at {creation_path!r}, not {expected!r}",
            )
        unwrapper = make_client(self._settings, self._options, token=wrapping)
        try:
            response = unwrapper.sys.unwrap()
        except Exception as exc:
            reason, detail = classify(exc)
            if reason in (Reason.PERMISSION_DENIED, Reason.TOKEN_INVALID, Reason.ERROR):
                reason = Reason.WRAPPING_REFUSED
            raise VaultFailure(reason, f"unwrapping the secret-id failed: {detail}") from exc
        self._seen_wrapping[hashlib.sha256(wrapping.encode()).hexdigest()] = VaultFailure(
            Reason.SECRET_ID_INVALID,
            "the AppRole secret-id from the last wrapped secret-id is no longer accepted; deliver a "
            "new wrapped secret-id to vault.wrapped_secret_id_file",
        )
        return str(response["data"]["secret_id"])

    # -- Kubernetes ------------------------------------------------------------------------------

    def _kubernetes(self, now: datetime) -> Token:
        jwt = _read_file(self._options.kubernetes_token_file, "Kubernetes service-account token")
        client = make_client(self._settings, self._options)
        try:
            response = client.auth.kubernetes.login(
                role=self._settings.kubernetes_role,
                jwt=jwt,
                use_token=False,
                mount_point=self._options.kubernetes_mount,
            )
        except Exception as exc:
            reason, detail = classify(exc)
            raise VaultFailure(reason, f"Kubernetes login refused: {detail}") from exc
        return _token_from_auth(response["auth"], now)

    # -- plain token (development) ---------------------------------------------------------------

    def _token(self, now: datetime) -> Token:
        if self._options.token_file:
            value = _read_file(self._options.token_file, "Vault token")
        else:
            value = os.environ.get("VAULT_TOKEN") or os.environ.get("BAO_TOKEN") or ""
            if not value:
                raise VaultFailure(Reason.MISCONFIGURED, "auth_method=token needs VAULT_TOKEN or a token file")
        client = make_client(self._settings, self._options, token=value)
        try:
            data = client.auth.token.lookup_self()["data"]
        except Exception as exc:
            reason, detail = classify(exc)
            if reason is Reason.PERMISSION_DENIED:
                reason = Reason.TOKEN_INVALID
            raise VaultFailure(reason, f"the configured Vault token is refused: {detail}") from exc
        return Token(
            value=value,
            accessor=str(data.get("accessor", "")),
            ttl=int(data.get("ttl", 0)),
            renewable=bool(data.get("renewable", False)),
            issued_at=now,
            policies=tuple(data.get("policies") or ()),
        )

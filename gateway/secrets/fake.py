"""An in-memory SecretStore for unit tests and ``antenna dev``: versioned site credentials, an in-memory SSH
CA (asyncssh) whose certificates carry exactly one principal, and a switch that makes it unavailable."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta

import asyncssh

from gateway.clock import Clock, SystemClock
from gateway.errors import SecretsUnavailable, SiteAuthFailed
from gateway.secrets.base import SecretStore, SiteCredentials
from gateway.secrets.layout import parse_reference
from gateway.secrets.metrics import Reason
from gateway.secrets.ssh import check_account


class FakeSecretStore(SecretStore):
    """Site credentials in a dict; ``allowed_accounts`` (per site) mimics the Vault SSH role's allow-list.

    ``set_unavailable(Reason.SEALED)`` makes every call raise ``SecretsUnavailable`` until
    ``set_available()``; unlike the Vault store the fake keeps no cache to fall back on.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        ttl_seconds: int = 300,
        cert_ttl_seconds: int = 600,
        allowed_accounts: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self._clock = clock or SystemClock()
        self._ttl = timedelta(seconds=ttl_seconds)
        self._cert_ttl = timedelta(seconds=cert_ttl_seconds)
        self._sites: dict[str, tuple[int, dict[str, str]]] = {}
        self._paths: dict[str, dict[str, str]] = {}
        self._allowed = (
            {site: set(accounts) for site, accounts in allowed_accounts.items()}
            if allowed_accounts is not None
            else None
        )
        self._ca = asyncssh.generate_private_key("ssh-ed25519", comment="antenna-fake-ca")
        self._unavailable: Reason | None = None
        self.signed: list[tuple[str, str]] = []  # (site, account) of every certificate issued

    # -- test and dev controls -------------------------------------------------------------------

    def put_site_credentials(self, site: str, values: Mapping[str, str]) -> int:
        """Store a new version of ``site``'s credentials (a rotation); returns the version number."""
        version = self._sites.get(site, (0, {}))[0] + 1
        self._sites[site] = (version, dict(values))
        return version

    def put_secret(self, path: str, values: Mapping[str, str]) -> None:
        """Store what a ``vault:<path>#<field>`` reference names (e.g. ``sites/lumi/robot``)."""
        self._paths[path] = dict(values)

    def allow_account(self, site: str, account: str) -> None:
        if self._allowed is not None:
            self._allowed.setdefault(site, set()).add(account)

    def set_unavailable(self, reason: Reason = Reason.SEALED) -> None:
        self._unavailable = reason

    def set_available(self) -> None:
        self._unavailable = None

    @property
    def ca_public_key(self) -> str:
        """The CA's public key in OpenSSH form, for an sshd's ``TrustedUserCAKeys``."""
        key: bytes = self._ca.export_public_key("openssh")
        return key.decode()

    # -- SecretStore -----------------------------------------------------------------------------

    def _raise_if_unavailable(self) -> None:
        if self._unavailable is not None:
            raise SecretsUnavailable(f"secrets store unavailable ({self._unavailable})", reason=str(self._unavailable))

    async def site_credentials(self, site: str) -> SiteCredentials:
        self._raise_if_unavailable()
        if site not in self._sites:
            raise SecretsUnavailable(f"no credentials stored for site {site}", reason=str(Reason.NOT_FOUND))
        version, values = self._sites[site]
        return SiteCredentials(
            site=site,
            version=version,
            values=dict(values),
            expires_at=self._clock.now() + self._ttl,
        )

    async def resolve_reference(self, reference: str) -> str:
        self._raise_if_unavailable()
        path, field = parse_reference(reference)
        values = self._paths.get(path, {})
        if path.startswith("sites/") and path.count("/") == 1 and path[6:] in self._sites:
            values = self._sites[path[6:]][1]
        if field not in values:
            raise SecretsUnavailable(f"nothing stored for {reference}", reason=str(Reason.NOT_FOUND))
        return values[field]

    async def sign_ssh_key(self, *, site: str, account: str, public_key: str) -> str:
        self._raise_if_unavailable()
        check_account(site, account)
        if self._allowed is not None and account not in self._allowed.get(site, set()):
            raise SiteAuthFailed(f"site {site}: account {account} is not allowed by the SSH role")
        try:
            user_key = asyncssh.import_public_key(public_key)
        except ValueError as exc:  # asyncssh.KeyImportError is one
            raise SiteAuthFailed("the public key to sign is not an OpenSSH public key") from exc
        now = self._clock.now()
        cert = self._ca.generate_user_certificate(
            user_key,
            f"antenna:{site}:{account}",
            principals=[account],
            valid_after=int((now - timedelta(seconds=30)).timestamp()),
            valid_before=int((now + self._cert_ttl).timestamp()),
            # Same shape as the Vault role: no extensions, batch commands need none.
            permit_x11_forwarding=False,
            permit_agent_forwarding=False,
            permit_port_forwarding=False,
            permit_pty=False,
            permit_user_rc=False,
        )
        self.signed.append((site, account))
        text: bytes = cert.export_certificate()
        return text.decode().strip()

    def invalidate(self, site: str) -> None:
        """Nothing is cached here; present for parity with the Vault store."""

    async def check(self) -> None:
        self._raise_if_unavailable()

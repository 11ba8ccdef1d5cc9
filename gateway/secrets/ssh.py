"""SSH user-certificate helpers shared by the Vault and fake stores: account checks and a certificate cache."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    SSHCertificate,
    load_ssh_public_identity,
    load_ssh_public_key,
)

from gateway.errors import SiteAuthFailed

# POSIX-portable user names; a comma would let one request carry several principals.
_ACCOUNT = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


def check_account(site: str, account: str) -> None:
    if not _ACCOUNT.match(account):
        raise SiteAuthFailed(f"site {site}: {account!r} is not a valid site account name")


def key_fingerprint(public_key: str) -> str:
    """A stable identifier of an OpenSSH public key (its wire form), for caching certificates."""
    try:
        key = load_ssh_public_key(public_key.strip().encode())
    except (ValueError, TypeError) as exc:
        raise SiteAuthFailed("the public key to sign is not an OpenSSH public key") from exc
    return key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def parse_certificate(text: str) -> SSHCertificate:
    identity = load_ssh_public_identity(text.strip().encode())
    if not isinstance(identity, SSHCertificate):
        raise TypeError("not an OpenSSH certificate")
    return identity


def certificate_validity(text: str) -> tuple[datetime, datetime]:
    cert = parse_certificate(text)
    return datetime.fromtimestamp(cert.valid_after, UTC), datetime.fromtimestamp(cert.valid_before, UTC)


@dataclass
class _CachedCert:
    certificate: str
    refresh_at: datetime
    expires_at: datetime


class CertificateCache:
    """Signed certificates per (site, account, key): reused until ``refresh_fraction`` of their validity
    window, and still served while Vault is down until they expire. Times are the certificate's own."""

    def __init__(self, refresh_fraction: float) -> None:
        self._refresh_fraction = refresh_fraction
        self._entries: dict[tuple[str, str, str], _CachedCert] = {}

    def put(self, key: tuple[str, str, str], certificate: str) -> None:
        valid_after, valid_before = certificate_validity(certificate)
        life = max((valid_before - valid_after).total_seconds(), 0.0)
        refresh_at = valid_after + timedelta(seconds=life * self._refresh_fraction)
        self._entries[key] = _CachedCert(certificate, refresh_at, valid_before)

    def fresh(self, key: tuple[str, str, str], now: datetime) -> str | None:
        entry = self._entries.get(key)
        return entry.certificate if entry is not None and now < entry.refresh_at else None

    def usable(self, key: tuple[str, str, str], now: datetime) -> tuple[str, datetime] | None:
        """A cached certificate still valid at ``now``, and when it expires."""
        entry = self._entries.get(key)
        if entry is None or now >= entry.expires_at:
            return None
        return entry.certificate, entry.expires_at

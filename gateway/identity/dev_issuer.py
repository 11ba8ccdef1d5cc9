"""The development token issuer of ``antenna dev``: one RSA key, discovery, JWKS, Keycloak-shaped tokens, and
the device authorization grant for its demo people.

It exists only in development mode; ``gateway/api/dev_issuer.py`` serves it under the issuer's path. The key
lives in memory, or in a file of the dev data folder so tokens survive a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from jwt.utils import base64url_encode

from gateway.clock import Clock
from gateway.identity.keys import StaticKeySource
from gateway.identity.principal import Role

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/protocol/openid-connect/certs"  # where Keycloak serves it


def _load_or_create_key(path: Path | None) -> rsa.RSAPrivateKey:
    if path is not None and path.exists():
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ValueError(f"{path.name}: not an RSA private key")
        return loaded
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if path is not None:
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
    return key


def _thumbprint(public_jwk: Mapping[str, Any]) -> str:
    """RFC 7638 key thumbprint: a kid that stays the same for the same key."""
    canonical = json.dumps({k: public_jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64url_encode(digest).decode()


class DevIssuer:
    """Mints RS256 access tokens shaped like the Antenna Keycloak's (``at+jwt``, ``azp``, ``aud``,
    ``groups``, ``realm_access``)."""

    def __init__(
        self,
        issuer: str,
        *,
        clock: Clock,
        key_file: Path | None = None,
        audience: str = "antenna-gateway",
        client_id: str = "antenna-cli",
    ) -> None:
        self.issuer = issuer  # exactly as configured: the verifier compares it byte for byte
        self.audience = audience
        self.client_id = client_id
        self.clock = clock
        self._key = _load_or_create_key(key_file)
        public = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        self.kid = _thumbprint(public)
        self._public_jwk = {**public, "kid": self.kid, "alg": "RS256", "use": "sig"}

    @property
    def jwks_uri(self) -> str:
        return self.issuer.rstrip("/") + JWKS_PATH

    def discovery(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The discovery document; ``extra`` adds endpoints (token, device authorization) the app serves."""
        return {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            **(extra or {}),
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(self._public_jwk)]}

    def public_key(self) -> rsa.RSAPublicKey:
        return self._key.public_key()

    def sign(self, claims: Mapping[str, Any]) -> str:
        """A JWT of any claims with the issuer's key (the refresh tokens of ``DevSignIn``)."""
        return jwt.encode(dict(claims), self._key, algorithm="RS256", headers={"kid": self.kid})

    def key_source(self) -> StaticKeySource:
        """The issuer's keys in process, for a verifier that need not fetch them over HTTP."""
        return StaticKeySource(self.jwks())

    def mint(
        self,
        person: str,
        *,
        projects: Mapping[str, Role] | None = None,
        roles: Iterable[str] = (),
        lifetime_seconds: int = 3600,
        client_id: str | None = None,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """An access token for ``person`` (their MyAccessID-style identifier) in ``projects``."""
        now = int(self.clock.now().timestamp())
        groups: list[str] = []
        for project, role in (projects or {}).items():
            groups.append(f"/projects/{project}")
            if role is Role.PI:
                groups.append(f"/projects/{project}/pi")
        claims: dict[str, Any] = {
            "iss": self.issuer,
            # Keycloak's sub is its own user id; the MyAccessID identifier arrives as a mapped claim.
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.issuer}#{person.lower()}")),
            "aud": [self.audience],
            "azp": client_id or self.client_id,
            "typ": "Bearer",
            "iat": now,
            "exp": now + lifetime_seconds,
            "jti": str(uuid.uuid4()),
            "scope": "openid profile",
            "preferred_username": person,
            "myaccessid_cuid": person,
            "groups": groups,
            "realm_access": {"roles": sorted(roles)},
            **(extra_claims or {}),
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "at+jwt"})


@dataclass(frozen=True)
class DemoPerson:
    """Someone ``antenna dev`` can sign in as: each role of the Antenna, tried on one machine."""

    person: str  # their MyAccessID-style identifier
    title: str  # who they are, in a line
    projects: Mapping[str, Role] = field(default_factory=dict)
    roles: tuple[str, ...] = ()


@dataclass
class _DeviceGrant:
    device_code: str
    user_code: str
    client_id: str
    expires_at: float
    person: str | None = None  # set when someone confirms the code


class DeviceFlowError(Exception):
    """An RFC 8628 / RFC 6749 error code for the token endpoint's answer (``authorization_pending``, ...)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


REFRESH_LIFETIME_SECONDS = 12 * 3600
ACCESS_LIFETIME_SECONDS = 3600
_USER_CODE_LETTERS = "BCDFGHJKLMNPQRSTVWXZ"  # no vowels: no words, as RFC 8628 section 6.1 advises


class DevSignIn:
    """The development issuer's device authorization grant (RFC 8628) and refresh tokens, for the demo people.

    Grants live in memory (a restart forgets unconfirmed codes); refresh tokens are JWTs signed with the
    issuer's key, so a signed-in CLI survives a restart of ``antenna dev``. A refresh token's audience is the
    issuer itself, so the gateway never takes one for an access token.
    """

    def __init__(self, issuer: DevIssuer, people: Iterable[DemoPerson], *, clock: Clock) -> None:
        self.issuer = issuer
        self.people = {p.person: p for p in people}
        self._clock = clock
        self._grants: dict[str, _DeviceGrant] = {}

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def start(self, client_id: str, *, lifetime_seconds: int = 600) -> _DeviceGrant:
        now = self._now()
        self._grants = {code: g for code, g in self._grants.items() if g.expires_at > now}
        letters = "".join(secrets.choice(_USER_CODE_LETTERS) for _ in range(8))
        grant = _DeviceGrant(
            device_code=secrets.token_urlsafe(32),
            user_code=f"{letters[:4]}-{letters[4:]}",
            client_id=client_id,
            expires_at=now + lifetime_seconds,
        )
        self._grants[grant.device_code] = grant
        return grant

    def pending(self, user_code: str) -> _DeviceGrant | None:
        wanted = user_code.strip().upper()
        now = self._now()
        return next(
            (g for g in self._grants.values() if g.user_code == wanted and g.expires_at > now and g.person is None),
            None,
        )

    def confirm(self, user_code: str, person: str) -> bool:
        grant = self.pending(user_code)
        if grant is None or person not in self.people:
            return False
        grant.person = person
        return True

    def redeem(self, device_code: str, client_id: str) -> dict[str, Any]:
        grant = self._grants.get(device_code)
        if grant is None or grant.client_id != client_id:
            raise DeviceFlowError("invalid_grant")
        if grant.expires_at <= self._now():
            del self._grants[device_code]
            raise DeviceFlowError("expired_token")
        if grant.person is None:
            raise DeviceFlowError("authorization_pending")
        del self._grants[device_code]  # a device code is redeemed once
        return self.tokens(grant.person, client_id=client_id)

    def refresh(self, refresh_token: str, client_id: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                refresh_token,
                self.issuer.public_key(),
                algorithms=["RS256"],
                audience=self.issuer.issuer,
                issuer=self.issuer.issuer,
            )
        except jwt.InvalidTokenError as exc:
            raise DeviceFlowError("invalid_grant") from exc
        if claims.get("typ") != "Refresh" or claims.get("azp") != client_id or claims.get("person") not in self.people:
            raise DeviceFlowError("invalid_grant")
        return self.tokens(claims["person"], client_id=client_id)

    def tokens(self, person: str, *, client_id: str | None = None) -> dict[str, Any]:
        """An access token and a refresh token for a demo person, as a token endpoint answers them."""
        who = self.people[person]
        now = int(self._now())
        refresh = self.issuer.sign(
            {
                "iss": self.issuer.issuer,
                "aud": self.issuer.issuer,
                "typ": "Refresh",
                "azp": client_id or self.issuer.client_id,
                "person": person,
                "iat": now,
                "exp": now + REFRESH_LIFETIME_SECONDS,
                "jti": str(uuid.uuid4()),
            }
        )
        return {
            "access_token": self.issuer.mint(
                person,
                projects=who.projects,
                roles=who.roles,
                lifetime_seconds=ACCESS_LIFETIME_SECONDS,
                client_id=client_id,
            ),
            "token_type": "Bearer",
            "expires_in": ACCESS_LIFETIME_SECONDS,
            "refresh_token": refresh,
            "refresh_expires_in": REFRESH_LIFETIME_SECONDS,
            "scope": "openid profile",
        }

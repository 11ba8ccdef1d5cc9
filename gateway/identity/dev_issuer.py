"""The development token issuer of ``antenna dev``: one RSA key, discovery, JWKS, Keycloak-shaped tokens.

It exists only in development mode; the app mounts ``discovery()`` and ``jwks()`` under the issuer's
path. The key lives in memory, or in a file of the dev data folder so tokens survive a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Mapping
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
        self._clock = clock
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
        now = int(self._clock.now().timestamp())
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

"""Bearer token verification as identity-contract.md states it: every check, each refusal with a reason.

PyJWT verifies the signature with the key the ``kid`` resolves to (bound to that key's algorithm), the
exact issuer, the audience and the presence of the required claims; times are checked here against the
injected clock, so tests and the key cache share one notion of now.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jwt
from jwt.exceptions import (
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidKeyError,
    InvalidSignatureError,
    InvalidTokenError,
    MissingRequiredClaimError,
    PyJWTError,
)

from gateway.clock import Clock
from gateway.errors import ConfigurationError, InvalidToken
from gateway.identity.claims import principal_from_claims
from gateway.identity.keys import ASYMMETRIC_ALGORITHMS, KeySource
from gateway.identity.principal import Principal
from gateway.settings import OIDCSettings

MAX_LEEWAY_SECONDS = 60
MAX_TOKEN_BYTES = 16 * 1024
# Headers that point at keys or extensions chosen by the token's author: never followed, always refused.
FORBIDDEN_HEADERS = ("jku", "x5u", "x5c", "jwk", "crit")
REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "sub"]
_ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")
_GENERIC_TYPES = ("jwt", "application/jwt")

REFUSAL_REASONS = (
    "malformed",
    "forbidden_header",
    "alg_not_allowed",
    "unknown_kid",
    "keys_unavailable",
    "bad_signature",
    "weak_key",
    "bad_issuer",
    "bad_audience",
    "missing_claim",
    "expired",
    "not_yet_valid",
    "lifetime_exceeded",
    "not_access_token",
    "azp_not_allowed",
    "missing_sub",
    "refused_person",
)
"""Every ``reason`` an InvalidToken from this package carries (e.g. to pre-create metric labels)."""


def refusal_reason(exc: InvalidToken) -> str:
    """The short machine reason of a refusal, for counting refusals by reason."""
    reason = exc.extra.get("reason")
    return reason if isinstance(reason, str) else "malformed"


def _refuse(detail: str, reason: str) -> InvalidToken:
    return InvalidToken(detail, reason=reason)


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refuse(f"claim {name!r} is not a number", "malformed")
    return float(value)


class TokenVerifier:
    """Verifies access tokens of the configured issuer and maps them to a Principal.

    ``accept_untyped_bearer`` admits tokens with no ``typ`` header when the payload's ``typ`` is
    ``Bearer`` (OpenBao's identity tokens carry no ``typ`` header); off by default, as the contract says.
    """

    def __init__(
        self,
        oidc: OIDCSettings,
        *,
        keys: KeySource,
        clock: Clock,
        accept_untyped_bearer: bool = False,
    ) -> None:
        if oidc.leeway_seconds > MAX_LEEWAY_SECONDS:
            raise ConfigurationError(f"oidc.leeway_seconds: at most {MAX_LEEWAY_SECONDS}")
        self._oidc = oidc
        self._keys = keys
        self._clock = clock
        self._algorithms = frozenset(oidc.algorithms) & ASYMMETRIC_ALGORITHMS
        self._accept_untyped_bearer = accept_untyped_bearer

    async def verify(self, token: str) -> Principal:
        """The principal of a valid access token; raises InvalidToken (with ``reason``) otherwise."""
        header = self._header(token)
        key = await self._keys.key(header["kid"])
        if key.algorithm_name != header["alg"] or key.algorithm_name not in self._algorithms:
            raise _refuse(f"alg {header['alg']!r} does not match the key's algorithm", "alg_not_allowed")
        claims = self._decode(token, key)
        self._check_times(claims)
        self._check_type(header, claims)
        azp = claims.get("azp")
        if not isinstance(azp, str) or azp not in self._oidc.allowed_azp:
            raise _refuse(f"client {str(azp)[:64]!r} is not allowed", "azp_not_allowed")
        return principal_from_claims(claims, self._oidc)

    def _header(self, token: str) -> dict[str, Any]:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_BYTES:
            raise _refuse("empty or oversized token", "malformed")
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError as exc:
            raise _refuse(f"unreadable token: {exc}", "malformed") from exc
        for name in FORBIDDEN_HEADERS:
            if name in header:
                raise _refuse(f"header {name!r} is refused", "forbidden_header")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise _refuse(f"alg {str(alg)[:16]!r} is not allowed", "alg_not_allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _refuse("no kid in the header", "unknown_kid")
        return header

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key=key,
                algorithms=[key.algorithm_name],
                audience=self._oidc.audience,
                issuer=self._oidc.issuer,
                options={
                    "require": REQUIRED_CLAIMS,
                    # Times are checked by _check_times against the injected clock.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    # An RSA key under 2048 bits is refused, not merely warned about.
                    "enforce_minimum_key_length": True,
                },
            )
        except InvalidSignatureError as exc:
            raise _refuse("bad signature", "bad_signature") from exc
        except InvalidAlgorithmError as exc:
            raise _refuse(f"algorithm refused: {exc}", "alg_not_allowed") from exc
        except MissingRequiredClaimError as exc:
            raise _refuse(f"claim {exc.claim!r} is missing", "missing_claim") from exc
        except InvalidIssuerError as exc:
            raise _refuse("wrong issuer", "bad_issuer") from exc
        except InvalidAudienceError as exc:
            raise _refuse("wrong audience", "bad_audience") from exc
        except InvalidKeyError as exc:
            raise _refuse(f"the issuer's key is refused: {exc}", "weak_key") from exc
        except InvalidTokenError as exc:
            raise _refuse(f"invalid token: {exc}", "malformed") from exc

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock.now().timestamp()
        leeway = self._oidc.leeway_seconds
        exp, iat = _number(claims, "exp"), _number(claims, "iat")
        if exp <= now - leeway:
            raise _refuse("token expired", "expired")
        if iat > now + leeway:
            raise _refuse("token issued in the future", "not_yet_valid")
        if "nbf" in claims and _number(claims, "nbf") > now + leeway:
            raise _refuse("token not yet valid (nbf)", "not_yet_valid")
        if exp - iat > self._oidc.max_token_lifetime_seconds:
            raise _refuse(f"token lifetime {exp - iat:.0f}s over the cap", "lifetime_exceeded")

    def _check_type(self, header: Mapping[str, Any], claims: Mapping[str, Any]) -> None:
        header_typ = header.get("typ")
        payload_typ = claims.get("typ")
        bearer = isinstance(payload_typ, str) and payload_typ.lower() == "bearer"
        if isinstance(header_typ, str) and header_typ.lower() in _ACCESS_TOKEN_TYPES:
            if payload_typ is None or bearer:
                return
        elif isinstance(header_typ, str) and header_typ.lower() in _GENERIC_TYPES:
            if bearer:
                return
        elif header_typ is None and self._accept_untyped_bearer and bearer:
            return
        raise _refuse(f"not an access token (typ {header_typ!r}/{payload_typ!r})", "not_access_token")

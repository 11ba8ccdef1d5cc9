"""The identity contract's refusal matrix at the HTTP boundary.

Each case of tests/identity/test_verifier.py sent to a gateway whose key set is fetched over real HTTP
from the loopback IdP: the answer is 401 with ``WWW-Authenticate: Bearer error="invalid_token"`` and the
same generic problem body whatever the reason, while the reason itself is counted in
``antenna_token_refusals_total`` (which is how each case proves it was refused by the rule it targets).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.api.harness import ALICE, Gateway, open_gateway
from tests.support.idp import IdPKey, LoopbackIdP, encode_jws

pytestmark = pytest.mark.anyio

GENERIC_BODY = {
    "type": "https://antenna.example/problems/invalid-token",
    "title": "Invalid or missing bearer token",
    "status": 401,
    "detail": "the bearer token is missing or invalid",
}


def _now() -> int:
    return int(time.time())


def _hs256_with_public_key(gw: Gateway) -> str:
    idp = gw.idp
    public_pem = idp.signing_key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": idp.signing_kid, "typ": "at+jwt"}
    claims = idp.claims(myaccessid_cuid=ALICE)
    return encode_jws(header, claims, lambda m: hmac.new(public_pem, m, hashlib.sha256).digest())


def _es256_key_not_allowed(gw: Gateway) -> str:
    gw.idp.rotate("ES256")  # a genuine key of the issuer, with an algorithm this gateway does not allow
    return gw.token(ALICE)


def _tampered(gw: Gateway) -> str:
    header, _, signature = gw.token(ALICE).split(".")
    forged = gw.token(ALICE, groups=["/projects/someone-elses/pi"]).split(".")[1]
    return f"{header}.{forged}.{signature}"


def _weak_key(gw: Gateway) -> str:
    weak = IdPKey("weak-1024", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=1024))
    gw.idp.keys[weak.kid] = weak
    return gw.idp.token(key=weak, myaccessid_cuid=ALICE)


def _payload_not_object(gw: Gateway) -> str:
    key = gw.idp.signing_key
    return encode_jws({"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}, ["not an object"], key.signer())


@dataclass(frozen=True)
class Case:
    reasons: tuple[str, ...]  # what antenna_token_refusals_total must count (any of these)
    token: Callable[[Gateway], str]
    oidc: dict[str, Any] = field(default_factory=dict)


def claims(reason: str, **kwargs: Any) -> Case:
    """A token of ALICE with ``kwargs`` as claims (``headers``/``omit`` as in LoopbackIdP.token)."""
    return Case((reason,), lambda gw: gw.token(ALICE, **kwargs))


def lazy(reason: str, make: Callable[[Gateway], dict[str, Any]]) -> Case:
    """Like ``claims`` for claims computed at send time (times, the issuer's own URL)."""
    return Case((reason,), lambda gw: gw.token(ALICE, **make(gw)))


def raw(reason: str, token: str) -> Case:
    return Case((reason,), lambda _: token)


CASES: dict[str, Case] = {
    # algorithm
    "alg-none": claims("alg_not_allowed", headers={"alg": "none"}),
    "hs256-signed-with-the-public-key": Case(("alg_not_allowed",), _hs256_with_public_key),
    "alg-outside-the-allow-list": Case(("alg_not_allowed",), _es256_key_not_allowed, {"algorithms": ["RS256"]}),
    "alg-other-than-the-keys-own": Case(
        ("alg_not_allowed",), lambda gw: gw.token(ALICE, headers={"alg": "PS256"}), {"algorithms": ["RS256", "PS256"]}
    ),
    "weak-rsa-key": Case(("weak_key",), _weak_key),
    # key id and key-pointing headers
    "unknown-kid": claims("unknown_kid", headers={"kid": "not-a-key-of-the-issuer"}),
    "missing-kid": claims("unknown_kid", headers={"kid": None}),
    "same-kid-signed-by-another-key": Case(
        ("bad_signature",),
        lambda gw: gw.idp.token(key=IdPKey.generate("RS256", kid=gw.idp.signing_kid), myaccessid_cuid=ALICE),
    ),
    "tampered-payload": Case(("bad_signature",), _tampered),
    "jku-header": lazy("forbidden_header", lambda gw: {"headers": {"jku": gw.idp.issuer + "/certs"}}),
    "x5u-header": lazy("forbidden_header", lambda gw: {"headers": {"x5u": gw.idp.issuer + "/cert.pem"}}),
    "x5c-header": claims("forbidden_header", headers={"x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]}),
    "jwk-header": claims("forbidden_header", headers={"jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}}),
    "crit-header": claims("forbidden_header", headers={"crit": ["b64"], "b64": True}),
    "unknown-critical-extension": Case(
        ("forbidden_header", "malformed"),
        lambda gw: gw.token(ALICE, headers={"crit": ["urn:example:ext"], "urn:example:ext": 1}),
    ),
    # issuer and audience
    "issuer-with-trailing-slash": lazy("bad_issuer", lambda gw: {"iss": gw.idp.issuer + "/"}),
    "other-issuer": claims("bad_issuer", iss="https://proxy.acc.myaccessid.org"),
    "missing-issuer": claims("missing_claim", omit=["iss"]),
    "missing-audience": claims("missing_claim", omit=["aud"]),
    "empty-audience": claims("missing_claim", aud=[]),
    "other-audience": claims("bad_audience", aud=["account", "grafana"]),
    # times (margins far beyond the 30 s leeway, so a slow machine cannot move a case across it)
    "missing-exp": claims("missing_claim", omit=["exp"]),
    "expired": lazy("expired", lambda _: {"iat": _now() - 900, "exp": _now() - 600}),
    "missing-iat": claims("missing_claim", omit=["iat"]),
    "iat-in-the-future": lazy("not_yet_valid", lambda _: {"iat": _now() + 600, "exp": _now() + 900}),
    "nbf-in-the-future": lazy("not_yet_valid", lambda _: {"nbf": _now() + 600}),
    "lifetime-over-the-cap": lazy("lifetime_exceeded", lambda _: {"iat": _now(), "exp": _now() + 3601}),
    "non-numeric-exp": lazy("malformed", lambda _: {"exp": str(_now() + 60)}),
    # token type
    "id-token": claims("not_access_token", headers={"typ": "JWT"}, typ="ID", aud="antenna-gateway"),
    "typ-jwt-without-bearer-marker": claims("not_access_token", headers={"typ": "JWT"}, omit=["typ"]),
    "refresh-token": claims("not_access_token", headers={"typ": "JWT"}, typ="Refresh"),
    "at-jwt-header-with-id-payload-type": claims("not_access_token", typ="ID"),
    "untyped-header": claims("not_access_token", headers={"typ": None}),
    # client and person
    "azp-not-allowed": claims("azp_not_allowed", azp="antenna-grafana"),
    "azp-missing": claims("azp_not_allowed", omit=["azp"]),
    "myaccessid-test-account": claims("refused_person", myaccessid_cuid="Test@MyAccessID.org"),
    "myaccessid-test-account-as-sub": claims("refused_person", omit=["myaccessid_cuid"], sub="test@myaccessid.org"),
    "missing-sub": claims("missing_claim", omit=["sub"]),
    # malformed
    "not-a-jwt": raw("malformed", "not-a-jwt"),
    "two-parts": raw("malformed", "a.b"),
    "garbage-three-parts": raw("malformed", "a.b.c"),
    "bad-signature-encoding": raw("malformed", "eyJhbGciOiJSUzI1NiJ9.e30.!!!!"),
    "header-is-a-json-array": raw("malformed", "W10.e30."),
    "oversized": raw("malformed", "x" * 20000),
    "payload-not-a-json-object": Case(("malformed",), _payload_not_object),
}


def refusals(gw: Gateway, reason: str) -> float:
    value = gw.rt.metrics.registry.get_sample_value("antenna_token_refusals_total", {"reason": reason})
    return value or 0.0


@pytest.mark.parametrize("name", list(CASES))
async def test_refused_token_gets_401_without_the_reason(tmp_path: Path, test_idp: LoopbackIdP, name: str) -> None:
    case = CASES[name]
    async with open_gateway(tmp_path, test_idp, seed=False, oidc=case.oidc) as gw:
        good_key = gw.idp.signing_key
        token = case.token(gw)  # before the gateway's first fetch: keys a case publishes are in its key set
        # The same gateway accepts a good token: the refusal below is the case's doing, not the setup's.
        good = await gw.client.get("/v1/me", headers={"Authorization": f"Bearer {gw.token(ALICE, key=good_key)}"})
        assert good.status_code == 200, good.text
        r = await gw.client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json() == GENERIC_BODY
        assert sum(refusals(gw, reason) for reason in case.reasons) == 1, f"not refused for {case.reasons}"


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer   ", "Basic YWxpY2U6c2VjcmV0"],
    ids=["no-header", "empty", "scheme-only", "blank-token", "basic-auth"],
)
async def test_missing_token_gets_401(bare_gw: Gateway, header: str | None) -> None:
    gw = bare_gw
    headers = {} if header is None else {"Authorization": header}
    r = await gw.client.get("/v1/me", headers=headers)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error=" not in r.headers["WWW-Authenticate"]  # RFC 6750 §3.1: no error code when no token was sent
    assert r.json() == GENERIC_BODY
    assert refusals(gw, "missing") == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/me"),
        ("GET", "/v1/sites"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/00000000-0000-0000-0000-000000000000"),
        ("DELETE", "/v1/jobs/00000000-0000-0000-0000-000000000000"),
        ("GET", "/v1/projects/demo/balance"),
        ("GET", "/v1/projects/demo/usage"),
        ("PUT", "/v1/projects/demo/allocations/local"),
        ("PUT", "/v1/people/someone/accounts/local"),
    ],
)
async def test_every_v1_endpoint_needs_a_token(bare_gw: Gateway, method: str, path: str) -> None:
    r = await bare_gw.client.request(method, path, json={} if method == "PUT" else None)
    assert r.status_code == 401, r.text


async def test_submit_with_an_expired_token_writes_nothing(gw: Gateway) -> None:
    before = await gw.ledger_state()
    expired = gw.token(ALICE, iat=_now() - 900, exp=_now() - 600)
    r = await gw.client.post(
        "/v1/jobs",
        json={"project": "demo", "site": "local", "partition": "small", "script": "#!/bin/sh\n", "time_limit": 5},
        headers={"Authorization": f"Bearer {expired}"},
    )
    assert r.status_code == 401
    assert await gw.ledger_state() == before

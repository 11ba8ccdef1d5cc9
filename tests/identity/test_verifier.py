"""The refusal matrix of identity-contract.md at the verifier, against a real key set over real HTTP.

Each token is signed with a real RSA/EC key of the loopback IdP (or, for an attack, shaped by hand);
each refusal must be an InvalidToken whose reason says which rule caught it. The HTTP-level answer
(401 and `WWW-Authenticate: Bearer error="invalid_token"`) is asserted by the API tests.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.clock import FakeClock
from gateway.errors import InvalidToken
from gateway.identity import KeySetCache, Role, TokenVerifier, refusal_reason
from tests.support.idp import DEFAULT_PERSON, IdPKey, LoopbackIdP, encode_jws

pytestmark = pytest.mark.anyio


async def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(token)
    return refusal_reason(caught.value)


def now(clock: FakeClock) -> int:
    return int(clock.now().timestamp())


# -- what is accepted ------------------------------------------------------------------------


async def test_keycloak_access_token_gives_the_principal(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    token = idp.token(
        myaccessid_cuid="ABCDEF0123@MyAccessID.org",
        groups=["/projects/ai4belgium", "/projects/ai4belgium/pi", "/projects/demo"],
        realm_access={"roles": ["antenna-quota-admin", "offline_access"]},
        jti="token-1",
    )
    principal = await verifier.verify(token)
    assert principal.person == "abcdef0123@myaccessid.org"
    assert principal.subject == "5c3f4a8e-2b1d-4e6f-9a7c-0d1e2f3a4b5c"
    assert dict(principal.projects) == {"ai4belgium": Role.PI, "demo": Role.MEMBER}
    assert principal.is_pi("ai4belgium")
    assert principal.is_member("ai4belgium")
    assert principal.is_member("demo")
    assert not principal.is_pi("demo")
    assert not principal.is_member("other")
    assert principal.has_role("antenna-quota-admin")
    assert not principal.has_role("antenna-operator")
    assert principal.client_id == "antenna-cli"
    assert principal.token_id == "token-1"


async def test_keycloak_default_typ_jwt_with_bearer_payload_accepted(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    principal = await verifier.verify(idp.token(headers={"typ": "JWT"}, typ="Bearer"))
    assert principal.person == DEFAULT_PERSON


async def test_es256_token_accepted(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    idp.rotate("ES256")
    assert (await verifier.verify(idp.token())).person == DEFAULT_PERSON


async def test_single_string_audience_accepted(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    assert (await verifier.verify(idp.token(aud="antenna-gateway"))).person == DEFAULT_PERSON


async def test_expired_within_leeway_accepted(idp: LoopbackIdP, verifier: TokenVerifier, clock: FakeClock) -> None:
    token = idp.token(iat=now(clock) - 300, exp=now(clock) - 20)  # default leeway 30 s
    assert (await verifier.verify(token)).person == DEFAULT_PERSON


async def test_lifetime_at_the_cap_accepted(idp: LoopbackIdP, verifier: TokenVerifier, clock: FakeClock) -> None:
    assert (await verifier.verify(idp.token(exp=now(clock) + 3600))).person == DEFAULT_PERSON


async def test_person_falls_back_to_sub_lower_cased(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    token = idp.token(omit=["myaccessid_cuid"], sub="ABC@myaccessid.org")
    principal = await verifier.verify(token)
    assert (principal.person, principal.subject) == ("abc@myaccessid.org", "ABC@myaccessid.org")


# -- algorithm ---------------------------------------------------------------------------------


async def test_alg_none_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    assert await refused(verifier, idp.token(headers={"alg": "none"})) == "alg_not_allowed"


async def test_hs256_signed_with_the_public_key_as_secret_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    public_pem = idp.signing_key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": idp.signing_kid, "typ": "at+jwt"}
    token = encode_jws(header, idp.claims(), lambda m: hmac.new(public_pem, m, hashlib.sha256).digest())
    assert await refused(verifier, token) == "alg_not_allowed"


async def test_alg_outside_the_allow_list_refused(idp: LoopbackIdP, keys: KeySetCache, clock: FakeClock) -> None:
    only_rs256 = TokenVerifier(idp.oidc_settings(algorithms=["RS256"]), keys=keys, clock=clock)
    idp.rotate("ES256")  # a genuine key of the issuer, with an algorithm this gateway does not allow
    assert await refused(only_rs256, idp.token()) == "alg_not_allowed"


async def test_alg_other_than_the_keys_own_refused(idp: LoopbackIdP, keys: KeySetCache, clock: FakeClock) -> None:
    # PS256 is allowed, and the signature is a valid PS256 one by the RSA key, but the key is RS256.
    verifier = TokenVerifier(idp.oidc_settings(algorithms=["RS256", "PS256"]), keys=keys, clock=clock)
    assert await refused(verifier, idp.token(headers={"alg": "PS256"})) == "alg_not_allowed"


# -- key id and key-pointing headers -------------------------------------------------------------


async def test_unknown_kid_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    assert await refused(verifier, idp.token(headers={"kid": "not-a-key-of-the-issuer"})) == "unknown_kid"


async def test_missing_kid_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    assert await refused(verifier, idp.token(headers={"kid": None})) == "unknown_kid"


async def test_same_kid_signed_by_another_key_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    impostor = IdPKey.generate("RS256", kid=idp.signing_kid)
    assert await refused(verifier, idp.token(key=impostor)) == "bad_signature"


async def test_token_signed_by_a_short_rsa_key_of_the_issuer_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    weak = IdPKey("weak", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=1024))
    idp.keys[weak.kid] = weak  # published by the issuer, so only its size is wrong
    assert await refused(verifier, idp.token(key=weak)) == "weak_key"


async def test_tampered_payload_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    header, _, signature = idp.token().split(".")
    forged_payload = idp.token(groups=["/projects/someone-elses/pi"]).split(".")[1]
    assert await refused(verifier, f"{header}.{forged_payload}.{signature}") == "bad_signature"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jku", "{issuer}/protocol/openid-connect/certs"),
        ("x5u", "{issuer}/cert.pem"),
        ("x5c", ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
        ("jwk", {"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
    ],
)
async def test_key_pointing_header_refused_and_never_followed(
    idp: LoopbackIdP, verifier: TokenVerifier, name: str, value: Any
) -> None:
    if isinstance(value, str):
        value = value.format(issuer=idp.issuer)
    assert await refused(verifier, idp.token(headers={name: value})) == "forbidden_header"
    assert idp.jwks_hits == 0  # refused before any key was looked up, let alone from the header's URL


async def test_crit_header_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    # An extension PyJWT itself understands (b64), so the refusal is the gateway's own rule.
    token = idp.token(headers={"crit": ["b64"], "b64": True})
    assert await refused(verifier, token) == "forbidden_header"


async def test_unknown_critical_extension_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    token = idp.token(headers={"crit": ["urn:example:ext"], "urn:example:ext": 1})
    assert await refused(verifier, token) in ("forbidden_header", "malformed")


# -- issuer and audience -----------------------------------------------------------------------


async def test_issuer_with_trailing_slash_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    assert await refused(verifier, idp.token(iss=idp.issuer + "/")) == "bad_issuer"


async def test_other_issuer_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    token = idp.token(iss="https://proxy.acc.myaccessid.org")
    assert await refused(verifier, token) == "bad_issuer"


async def test_missing_issuer_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    assert await refused(verifier, idp.token(omit=["iss"])) == "missing_claim"


async def test_missing_audience_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    assert await refused(verifier, idp.token(omit=["aud"])) == "missing_claim"


async def test_empty_audience_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    assert await refused(verifier, idp.token(aud=[])) == "missing_claim"


async def test_other_audience_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    assert await refused(verifier, idp.token(aud=["account", "grafana"])) == "bad_audience"


# -- times -------------------------------------------------------------------------------------


async def test_missing_exp_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    assert await refused(verifier, idp.token(omit=["exp"])) == "missing_claim"


async def test_expired_beyond_leeway_refused(idp: LoopbackIdP, verifier: TokenVerifier, clock: FakeClock) -> None:
    token = idp.token(iat=now(clock) - 300, exp=now(clock) - 31)
    assert await refused(verifier, token) == "expired"


async def test_token_expiring_while_cached_keys_are_fresh_refused(
    idp: LoopbackIdP, verifier: TokenVerifier, clock: FakeClock
) -> None:
    token = idp.token()
    await verifier.verify(token)
    clock.advance(300 + 30)  # its lifetime plus the leeway
    assert await refused(verifier, token) == "expired"


async def test_missing_iat_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    assert await refused(verifier, idp.token(omit=["iat"])) == "missing_claim"


async def test_iat_in_the_future_refused(idp: LoopbackIdP, verifier: TokenVerifier, clock: FakeClock) -> None:
    token = idp.token(iat=now(clock) + 120, exp=now(clock) + 400)
    assert await refused(verifier, token) == "not_yet_valid"


async def test_nbf_in_the_future_refused(idp: LoopbackIdP, verifier: TokenVerifier, clock: FakeClock) -> None:
    assert await refused(verifier, idp.token(nbf=now(clock) + 31)) == "not_yet_valid"


async def test_nbf_within_leeway_accepted(idp: LoopbackIdP, verifier: TokenVerifier, clock: FakeClock) -> None:
    assert (await verifier.verify(idp.token(nbf=now(clock) + 29))).person == DEFAULT_PERSON


async def test_lifetime_over_the_cap_refused(idp: LoopbackIdP, verifier: TokenVerifier, clock: FakeClock) -> None:
    assert await refused(verifier, idp.token(exp=now(clock) + 3601)) == "lifetime_exceeded"


async def test_non_numeric_exp_refused(idp: LoopbackIdP, verifier: TokenVerifier, clock: FakeClock) -> None:
    assert await refused(verifier, idp.token(exp=str(now(clock) + 60))) == "malformed"


# -- token type ------------------------------------------------------------------------------


async def test_id_token_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    # Keycloak's ID token: header typ JWT, payload typ ID, aud the client (here also the gateway).
    token = idp.token(headers={"typ": "JWT"}, typ="ID", aud="antenna-gateway")
    assert await refused(verifier, token) == "not_access_token"


async def test_typ_jwt_without_bearer_marker_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    assert await refused(verifier, idp.token(headers={"typ": "JWT"}, omit=["typ"])) == "not_access_token"


async def test_refresh_token_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    token = idp.token(headers={"typ": "JWT"}, typ="Refresh")
    assert await refused(verifier, token) == "not_access_token"


async def test_at_jwt_header_with_id_payload_type_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    assert await refused(verifier, idp.token(typ="ID")) == "not_access_token"


async def test_untyped_header_refused_by_default(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    assert await refused(verifier, idp.token(headers={"typ": None})) == "not_access_token"


async def test_untyped_bearer_accepted_only_when_enabled(
    idp: LoopbackIdP, oidc: Any, keys: KeySetCache, clock: FakeClock
) -> None:
    lenient = TokenVerifier(oidc, keys=keys, clock=clock, accept_untyped_bearer=True)
    assert (await lenient.verify(idp.token(headers={"typ": None}))).person == DEFAULT_PERSON
    assert await refused(lenient, idp.token(headers={"typ": None}, typ="ID")) == "not_access_token"


# -- client and person -------------------------------------------------------------------------


async def test_azp_not_allowed_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    assert await refused(verifier, idp.token(azp="antenna-grafana")) == "azp_not_allowed"


async def test_azp_missing_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    assert await refused(verifier, idp.token(omit=["azp"])) == "azp_not_allowed"


async def test_myaccessid_test_account_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    token = idp.token(myaccessid_cuid="Test@MyAccessID.org")
    assert await refused(verifier, token) == "refused_person"


async def test_myaccessid_test_account_as_sub_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    token = idp.token(omit=["myaccessid_cuid"], sub="test@myaccessid.org")
    assert await refused(verifier, token) == "refused_person"


async def test_missing_sub_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    assert await refused(verifier, idp.token(omit=["sub"])) == "missing_claim"


# -- malformed -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-jwt",
        "a.b",
        "a.b.c",
        "eyJhbGciOiJSUzI1NiJ9.e30.!!!!",
        "W10.e30.",  # header is a JSON array
        "x" * 20000,
    ],
    ids=["empty", "one-part", "two-parts", "garbage", "bad-signature-encoding", "header-array", "oversized"],
)
async def test_malformed_token_refused(verifier: TokenVerifier, token: str) -> None:
    assert await refused(verifier, token) == "malformed"


async def test_payload_not_a_json_object_refused(idp: LoopbackIdP, verifier: TokenVerifier) -> None:
    key = idp.signing_key
    token = encode_jws({"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}, ["not an object"], key.signer())
    assert await refused(verifier, token) == "malformed"

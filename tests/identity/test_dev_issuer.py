"""The development issuer of `antenna dev`: its tokens pass the same verifier as Keycloak's."""

from __future__ import annotations

import stat
from pathlib import Path

import jwt
import pytest

from gateway.clock import FakeClock
from gateway.errors import InvalidToken
from gateway.identity import DevIssuer, Role, TokenVerifier
from gateway.settings import OIDCSettings

pytestmark = pytest.mark.anyio

ISSUER = "http://127.0.0.1:8000/dev-issuer"


def verifier_for(issuer: DevIssuer, clock: FakeClock) -> TokenVerifier:
    return TokenVerifier(OIDCSettings(issuer=issuer.issuer), keys=issuer.key_source(), clock=clock)


async def test_minted_token_verifies_and_maps_projects_and_roles(clock: FakeClock) -> None:
    issuer = DevIssuer(ISSUER, clock=clock)
    token = issuer.mint(
        "Alice@MyAccessID.org",
        projects={"demo": Role.PI, "other": Role.MEMBER},
        roles=["antenna-quota-admin"],
    )
    principal = await verifier_for(issuer, clock).verify(token)
    assert principal.person == "alice@myaccessid.org"
    assert dict(principal.projects) == {"demo": Role.PI, "other": Role.MEMBER}
    assert principal.has_role("antenna-quota-admin")
    assert principal.client_id == "antenna-cli"


async def test_token_is_shaped_like_keycloaks(clock: FakeClock) -> None:
    issuer = DevIssuer(ISSUER, clock=clock)
    token = issuer.mint("bob@myaccessid.org", projects={"demo": Role.MEMBER})
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (header["alg"], header["typ"], header["kid"]) == ("RS256", "at+jwt", issuer.kid)
    assert claims["iss"] == ISSUER
    assert claims["aud"] == ["antenna-gateway"]
    assert claims["azp"] == "antenna-cli"
    assert claims["typ"] == "Bearer"
    assert claims["groups"] == ["/projects/demo"]
    assert claims["realm_access"] == {"roles": []}
    assert claims["exp"] - claims["iat"] == 3600


async def test_issuer_is_kept_exactly_as_configured(clock: FakeClock) -> None:
    issuer = DevIssuer(ISSUER + "/", clock=clock)
    assert issuer.discovery()["jwks_uri"] == f"{ISSUER}/protocol/openid-connect/certs"
    assert (await verifier_for(issuer, clock).verify(issuer.mint("dan@myaccessid.org"))).person == "dan@myaccessid.org"


async def test_expired_dev_token_refused(clock: FakeClock) -> None:
    issuer = DevIssuer(ISSUER, clock=clock)
    token = issuer.mint("bob@myaccessid.org", lifetime_seconds=60)
    clock.advance(91)
    with pytest.raises(InvalidToken):
        await verifier_for(issuer, clock).verify(token)


async def test_token_of_another_dev_issuer_refused(clock: FakeClock) -> None:
    mine, theirs = DevIssuer(ISSUER, clock=clock), DevIssuer(ISSUER, clock=clock)
    with pytest.raises(InvalidToken):
        await verifier_for(mine, clock).verify(theirs.mint("eve@myaccessid.org"))


def test_discovery_and_jwks_documents(clock: FakeClock) -> None:
    issuer = DevIssuer(ISSUER, clock=clock)
    discovery = issuer.discovery({"device_authorization_endpoint": f"{ISSUER}/device"})
    assert discovery["issuer"] == ISSUER
    assert discovery["jwks_uri"] == f"{ISSUER}/protocol/openid-connect/certs"
    assert discovery["device_authorization_endpoint"] == f"{ISSUER}/device"
    [key] = issuer.jwks()["keys"]
    assert (key["kty"], key["alg"], key["use"], key["kid"]) == ("RSA", "RS256", "sig", issuer.kid)
    assert "d" not in key  # public half only


async def test_key_file_is_private_and_survives_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    key_file = tmp_path / "dev" / "issuer-key.pem"
    first = DevIssuer(ISSUER, clock=clock, key_file=key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    token = first.mint("carol@myaccessid.org")
    again = DevIssuer(ISSUER, clock=clock, key_file=key_file)
    assert again.kid == first.kid
    assert (await verifier_for(again, clock).verify(token)).person == "carol@myaccessid.org"

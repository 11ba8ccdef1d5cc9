"""The verifier against an issuer the project did not write: OpenBao's identity OIDC provider over HTTPS.

OpenBao signs RS256 tokens for a logged-in entity, with claims from a template (here Keycloak-shaped:
`typ`, `azp`, `groups`, `realm_access`, and G069 entitlements from the entity's OpenBao groups), and
rotates its keys. Keycloak itself cannot run here; these tokens stand in for it. OpenBao puts no `typ`
in the token header, so the verifier needs `accept_untyped_bearer=True` for them (the strict default
refuses them, which a test below shows).
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest

from gateway.clock import FakeClock
from gateway.errors import InvalidToken
from gateway.identity import KeySetCache, Role, TokenVerifier, refusal_reason
from gateway.settings import OIDCSettings
from tests.support.openbao import OpenBao

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

CUID = "0A1B2C3D4E5F@myaccessid.org"
ENTITLEMENT = "urn:geant:antenna.be:group:projects:ai4belgium:role=pi"
# `}}` would close the template expression: the closing braces of nested objects are spaced.
TEMPLATE = (
    '{"typ": "Bearer", "azp": "antenna-cli", '
    '"myaccessid_cuid": {{identity.entity.metadata.cuid}}, '
    '"eduperson_entitlement": {{identity.entity.groups.names}}, '
    '"groups": ["/projects/demo"], '
    '"realm_access": {"roles": ["antenna-operator"]} }'
)


class Issuer:
    """One OpenBao set up as a token issuer: a key, two roles, a userpass person with an entity."""

    def __init__(self, bao: OpenBao) -> None:
        self.bao = bao
        self.suffix = uuid.uuid4().hex[:8]
        self.key = f"antenna-{self.suffix}"
        self.role = f"antenna-gateway-{self.suffix}"
        self.foreign_role = f"other-service-{self.suffix}"
        self.mount = f"userpass-{self.suffix}"
        self._password = secrets.token_urlsafe(24)
        self._http = httpx.Client(base_url=bao.address, verify=bao.client_verify(), timeout=10)

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
        headers = {"X-Vault-Token": token or self.bao.root_token}
        response = self._http.request(method, f"/v1/{path}", json=body, headers=headers)
        if response.status_code >= 400:
            pytest.fail(f"OpenBao {method} {path}: HTTP {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def set_up(self) -> None:
        self.call("POST", "identity/oidc/config", {"issuer": self.bao.address})
        self.call(
            "POST",
            f"identity/oidc/key/{self.key}",
            {"algorithm": "RS256", "rotation_period": "24h", "verification_ttl": "24h", "allowed_client_ids": "*"},
        )
        for role, client_id in ((self.role, "antenna-gateway"), (self.foreign_role, "other-service")):
            body = {"key": self.key, "client_id": client_id, "ttl": "15m", "template": TEMPLATE}
            self.call("POST", f"identity/oidc/role/{role}", body)
        policy = "\n".join(
            f'path "identity/oidc/token/{role}" {{ capabilities = ["read"] }}'
            for role in (self.role, self.foreign_role)
        )
        self.call("PUT", f"sys/policies/acl/{self.key}", {"policy": policy})
        self.call("POST", f"sys/auth/{self.mount}", {"type": "userpass"})
        accessor = self.call("GET", "sys/auth")["data"][f"{self.mount}/"]["accessor"]
        user = {"password": self._password, "token_policies": self.key}
        self.call("POST", f"auth/{self.mount}/users/alice", user)
        entity = self.call("POST", "identity/entity", {"name": f"alice-{self.suffix}", "metadata": {"cuid": CUID}})
        entity_id = entity["data"]["id"]
        alias = {"name": "alice", "canonical_id": entity_id, "mount_accessor": accessor}
        self.call("POST", "identity/entity-alias", alias)
        self.call("POST", "identity/group", {"name": ENTITLEMENT, "member_entity_ids": [entity_id]})

    def token(self, role: str | None = None) -> str:
        login = self.call("POST", f"auth/{self.mount}/login/alice", {"password": self._password})
        client_token = login["auth"]["client_token"]
        token: str = self.call("GET", f"identity/oidc/token/{role or self.role}", token=client_token)["data"]["token"]
        return token

    def rotate(self) -> None:
        self.call("POST", f"identity/oidc/key/{self.key}/rotate", {})

    @property
    def oidc(self) -> OIDCSettings:
        return OIDCSettings(issuer=f"{self.bao.address}/v1/identity/oidc")


@pytest.fixture
def issuer(openbao_tls: OpenBao) -> Iterator[Issuer]:
    issuer = Issuer(openbao_tls)
    issuer.set_up()
    try:
        yield issuer
    finally:
        issuer.close()


@pytest.fixture
def clock() -> FakeClock:
    # OpenBao stamps real times; the fake clock starts at real now and only moves when told.
    return FakeClock(datetime.now(UTC))


async def test_openbao_token_verifies_then_rotation_is_followed(issuer: Issuer, clock: FakeClock) -> None:
    assert issuer.oidc.issuer.startswith("https://")
    async with httpx.AsyncClient(verify=issuer.bao.client_verify()) as http:
        keys = KeySetCache.from_settings(issuer.oidc, http=http, clock=clock)
        verifier = TokenVerifier(issuer.oidc, keys=keys, clock=clock, accept_untyped_bearer=True)

        first = issuer.token()
        principal = await verifier.verify(first)
        assert principal.person == CUID.lower()
        assert dict(principal.projects) == {"ai4belgium": Role.PI, "demo": Role.MEMBER}
        assert principal.has_role("antenna-operator")
        assert principal.client_id == "antenna-cli"

        issuer.rotate()
        second = issuer.token()
        assert jwt.get_unverified_header(second)["kid"] != jwt.get_unverified_header(first)["kid"]
        clock.advance(30)  # past the refetch cooldown, should the new kid not be published yet
        assert (await verifier.verify(second)).person == CUID.lower()
        assert (await verifier.verify(first)).person == CUID.lower()  # within OpenBao's verification_ttl
        assert keys.fetch_outcomes["error"] == 0


async def test_openbao_token_for_another_audience_refused(issuer: Issuer, clock: FakeClock) -> None:
    async with httpx.AsyncClient(verify=issuer.bao.client_verify()) as http:
        keys = KeySetCache.from_settings(issuer.oidc, http=http, clock=clock)
        verifier = TokenVerifier(issuer.oidc, keys=keys, clock=clock, accept_untyped_bearer=True)
        with pytest.raises(InvalidToken) as caught:
            await verifier.verify(issuer.token(issuer.foreign_role))
        assert refusal_reason(caught.value) == "bad_audience"


async def test_openbao_untyped_token_refused_by_the_strict_default(issuer: Issuer, clock: FakeClock) -> None:
    token = issuer.token()
    assert "typ" not in jwt.get_unverified_header(token)
    assert json.loads(jwt.utils.base64url_decode(token.split(".")[1]))["typ"] == "Bearer"
    async with httpx.AsyncClient(verify=issuer.bao.client_verify()) as http:
        keys = KeySetCache.from_settings(issuer.oidc, http=http, clock=clock)
        with pytest.raises(InvalidToken) as caught:
            await TokenVerifier(issuer.oidc, keys=keys, clock=clock).verify(token)
        assert refusal_reason(caught.value) == "not_access_token"

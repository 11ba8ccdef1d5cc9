"""`check_realm` against Keycloak admin API replies recorded as data files (tests/realm/data).

No Keycloak server can run on these machines. The replies follow Keycloak 26's documented admin REST API
representations and are served by a real local HTTP server, so python-keycloak runs unchanged: token fetch,
requests, paging. A compliant realm (as infra/ declares it) must produce no difference; each broken setting
must produce a difference naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from keycloak import KeycloakAdmin

from gateway.errors import Forbidden, NotFound
from gateway.realm import Difference, KeycloakUnavailable, RealmContract, check_realm, connect_admin
from tests.realm.keycloak_replay import CLIENT_ID, CLIENT_SECRET, Replay

A = "GET /admin/realms/antenna"
IDP = f"{A}/identity-provider/instances/myaccessid"
MAPPERS = f"{IDP}/mappers"
CLIENTS = f"{A}/clients"
CLI_ID = "5b1e6a2c-1f0d-4c7e-9a11-6f3d2b8c9e01"


def settings(differences: list[Difference]) -> list[str]:
    return [d.setting for d in differences]


def test_the_recorded_compliant_realm_has_no_difference(admin: KeycloakAdmin, replay: Replay) -> None:
    assert check_realm(admin) == []
    # It read the realm over the admin API, authenticated, without writing anything.
    assert ("POST", "POST /realms/master/protocol/openid-connect/token") in replay.log
    assert ("GET", CLIENTS) in replay.log
    assert replay.writes() == [("POST", "POST /realms/master/protocol/openid-connect/token")]


def client(replay: Replay, client_id: str) -> dict[str, Any]:
    return next(c for c in replay.replies[CLIENTS] if c["clientId"] == client_id)


def idp_config(replay: Replay) -> dict[str, Any]:
    return replay.replies[IDP]["config"]


def gateway_scope(replay: Replay) -> dict[str, Any]:
    return next(s for s in replay.replies[f"{A}/client-scopes"] if s["name"] == "antenna-gateway")


def mapper(replay: Replay, name: str) -> dict[str, Any]:
    return next(m for m in replay.replies[MAPPERS] if m["name"] == name)


# (description, edit of the recorded replies, the setting that must be reported)
BROKEN: list[tuple[str, Callable[[Replay], Any], str | list[str]]] = [
    (
        "signature validation off",
        lambda r: idp_config(r).update(validateSignature="false"),
        "identity provider myaccessid: config.validateSignature",
    ),
    ("no JWKS URL", lambda r: idp_config(r).pop("jwksUrl"), "identity provider myaccessid: config.jwksUrl"),
    (
        "keys not from the JWKS URL",
        lambda r: idp_config(r).update(useJwksUrl="false"),
        "identity provider myaccessid: config.useJwksUrl",
    ),
    ("no issuer", lambda r: idp_config(r).pop("issuer"), "identity provider myaccessid: config.issuer"),
    (
        "PKCE off",
        lambda r: idp_config(r).update(pkceEnabled="false"),
        "identity provider myaccessid: config.pkceEnabled",
    ),
    (
        "PKCE plain",
        lambda r: idp_config(r).update(pkceMethod="plain"),
        "identity provider myaccessid: config.pkceMethod",
    ),
    (
        "not a confidential client",
        lambda r: idp_config(r).pop("clientAuthMethod"),
        "identity provider myaccessid: config.clientAuthMethod",
    ),
    (
        "secret stored in Keycloak",
        lambda r: idp_config(r).update(clientSecret="**********"),
        "identity provider myaccessid: config.clientSecret",
    ),
    (
        "sync mode IMPORT",
        lambda r: idp_config(r).update(syncMode="IMPORT"),
        "identity provider myaccessid: config.syncMode",
    ),
    (
        "upstream tokens stored",
        lambda r: r.replies[IDP].update(storeToken=True),
        "identity provider myaccessid: storeToken",
    ),
    (
        "upstream e-mail trusted",
        lambda r: r.replies[IDP].update(trustEmail=True),
        "identity provider myaccessid: trustEmail",
    ),
    (
        "no post-broker check",
        lambda r: r.replies[IDP].pop("postBrokerLoginFlowAlias"),
        "identity provider myaccessid: postBrokerLoginFlowAlias",
    ),
    (
        "post-broker condition without negate",
        lambda r: r.replies[f"{A}/authentication/config/b5000000-0000-4000-8000-000000000001"]["config"].update(
            negate="false"
        ),
        "post broker login flow 'antenna-post-broker-login'",
    ),
    (
        "auto-link added to the first-login flow",
        lambda r: r.replies[f"{A}/authentication/flows/antenna-first-broker-login/executions"].append(
            {
                "id": "x",
                "requirement": "ALTERNATIVE",
                "displayName": "Automatically set existing user",
                "providerId": "idp-auto-link",
                "level": 0,
                "index": 1,
            }
        ),
        "first broker login flow 'antenna-first-broker-login'",
    ),
    (
        "username not from sub",
        lambda r: mapper(r, "username from sub")["config"].update(template="${CLAIM.email}"),
        "identity provider myaccessid: username mapper",
    ),
    (
        "assurance not imported",
        lambda r: r.replies[MAPPERS].remove(mapper(r, "eduperson_assurance to eduperson_assurance")),
        "identity provider myaccessid: attribute importer eduperson_assurance",
    ),
    (
        "group mapper keeps people after their entitlement is gone",
        lambda r: mapper(r, "entitlement to /projects/ai4belgium")["config"].update(syncMode="IMPORT"),
        "identity provider myaccessid: group mapper entitlement to /projects/ai4belgium: syncMode",
    ),
    (
        "entitlements editable by their holder",
        lambda r: next(
            a for a in r.replies[f"{A}/users/profile"]["attributes"] if a["name"] == "eduperson_entitlement"
        )["permissions"].update(edit=["admin", "user"]),
        "user profile attribute eduperson_entitlement: edit",
    ),
    ("operator role missing", lambda r: r.replies[f"{A}/roles"].pop(1), "realm role antenna-operator"),
    (
        "access tokens live two hours",
        lambda r: r.replies[A].update(accessTokenLifespan=7200),
        "realm antenna: accessTokenLifespan",
    ),
    (
        "self-registration on",
        lambda r: r.replies[A].update(registrationAllowed=True),
        "realm antenna: registrationAllowed",
    ),
    (
        "CLI takes passwords",
        lambda r: client(r, "antenna-cli").update(directAccessGrantsEnabled=True),
        "client antenna-cli: directAccessGrantsEnabled",
    ),
    (
        "Keycloak's default admin-cli takes passwords",
        lambda r: client(r, "admin-cli").update(directAccessGrantsEnabled=True),
        "client admin-cli: directAccessGrantsEnabled",
    ),
    (
        "portal uses the implicit flow",
        lambda r: client(r, "antenna-portal").update(implicitFlowEnabled=True),
        "client antenna-portal: implicitFlowEnabled",
    ),
    (
        "CLI has the browser flow",
        lambda r: client(r, "antenna-cli").update(standardFlowEnabled=True),
        "client antenna-cli: standardFlowEnabled",
    ),
    (
        "CLI without the device grant",
        lambda r: client(r, "antenna-cli")["attributes"].update({"oauth2.device.authorization.grant.enabled": "false"}),
        "client antenna-cli: oauth2.device.authorization.grant.enabled",
    ),
    (
        "portal is public",
        lambda r: client(r, "antenna-portal").update(publicClient=True),
        "client antenna-portal: publicClient",
    ),
    (
        "portal without PKCE",
        lambda r: client(r, "antenna-portal")["attributes"].pop("pkce.code.challenge.method"),
        "client antenna-portal: pkce.code.challenge.method",
    ),
    (
        "full scope on",
        lambda r: client(r, "antenna-portal").update(fullScopeAllowed=True),
        "client antenna-portal: fullScopeAllowed",
    ),
    (
        "client token lifetime overrides the realm's",
        lambda r: client(r, "antenna-portal")["attributes"].update({"access.token.lifespan": "86400"}),
        "client antenna-portal: access.token.lifespan",
    ),
    (
        "no at+jwt",
        lambda r: client(r, "antenna-cli")["attributes"].pop("access.token.header.type.rfc9068"),
        "client antenna-cli: access.token.header.type.rfc9068",
    ),
    (
        "audience mapper gone from the gateway scope",
        lambda r: gateway_scope(r)["protocolMappers"].pop(0),
        ["client antenna-cli: audience", "client antenna-portal: audience"],
    ),
    (
        "gateway scope not a default scope of the CLI",
        lambda r: client(r, "antenna-cli")["defaultClientScopes"].remove("antenna-gateway"),
        ["client antenna-cli: audience", "client antenna-cli: groups claim"],
    ),
    (
        "operator role never reaches CLI tokens",
        lambda r: r.replies[f"{A}/clients/{CLI_ID}/scope-mappings/realm"].pop(),
        "client antenna-cli: scope mapping antenna-operator",
    ),
    (
        "grafana client missing",
        lambda r: r.replies[CLIENTS].remove(client(r, "antenna-grafana")),
        "client antenna-grafana",
    ),
    (
        "test account authorised",
        lambda r: (
            r.replies[f"{A}/users?username=test@myaccessid.org"].append(
                {"id": "t-1", "username": "test@myaccessid.org"}
            ),
            r.replies.__setitem__(
                f"{A}/users/t-1/groups", [{"id": "g", "name": "ai4belgium", "path": "/projects/ai4belgium"}]
            ),
        ),
        "user test@myaccessid.org",
    ),
]


@pytest.mark.parametrize(("edit", "setting"), [(e, s) for _, e, s in BROKEN], ids=[d for d, _, _ in BROKEN])
def test_each_broken_setting_is_reported(
    admin: KeycloakAdmin, replay: Replay, edit: Callable[[Replay], Any], setting: str | list[str]
) -> None:
    edit(replay)
    assert settings(check_realm(admin)) == (setting if isinstance(setting, list) else [setting])


def test_the_acceptance_instance_is_reported_in_production(admin: KeycloakAdmin, replay: Replay) -> None:
    idp_config(replay).update(issuer="https://proxy.acc.myaccessid.org")
    differences = check_realm(admin)
    assert settings(differences) == ["identity provider myaccessid: config.issuer"] * 2
    assert "never the acceptance instance" in str(differences[1])


def test_a_development_contract_accepts_the_acceptance_instance(admin: KeycloakAdmin, replay: Replay) -> None:
    idp_config(replay).update(issuer="https://proxy.acc.myaccessid.org", clientSecret="**********")
    dev = RealmContract(issuer="https://proxy.acc.myaccessid.org", require_vault_client_secret=False)
    assert check_realm(admin, dev) == []


def test_keycloaks_stock_first_login_flow_is_reported_for_linking_by_email(
    admin: KeycloakAdmin, replay: Replay
) -> None:
    replay.replies[IDP]["firstBrokerLoginFlowAlias"] = "first broker login"
    (difference,) = check_realm(admin)
    assert difference.setting == "first broker login flow 'first broker login'"
    assert difference.actual == "idp-email-verification"


def test_a_disabled_linking_step_is_not_reported(admin: KeycloakAdmin, replay: Replay) -> None:
    replay.replies[IDP]["firstBrokerLoginFlowAlias"] = "first broker login"
    flow = replay.replies[f"{A}/authentication/flows/first broker login/executions"]
    next(s for s in flow if s.get("providerId") == "idp-email-verification")["requirement"] = "DISABLED"
    assert check_realm(admin) == []


def test_a_missing_identity_provider_is_a_difference(admin: KeycloakAdmin, replay: Replay) -> None:
    del replay.replies[IDP]
    (difference,) = check_realm(admin)
    assert difference == Difference("identity provider myaccessid", "an OIDC identity provider for MyAccessID", "none")


def test_several_differences_are_all_listed(admin: KeycloakAdmin, replay: Replay) -> None:
    idp_config(replay).update(validateSignature="false")
    replay.replies[IDP]["storeToken"] = True
    client(replay, "antenna-cli")["fullScopeAllowed"] = True
    assert settings(check_realm(admin)) == [
        "identity provider myaccessid: config.validateSignature",
        "identity provider myaccessid: storeToken",
        "client antenna-cli: fullScopeAllowed",
    ]


def test_difference_reads_as_a_sentence() -> None:
    d = Difference("identity provider myaccessid: storeToken", "False", "True")
    assert str(d) == "identity provider myaccessid: storeToken: expected False, found True"


def test_a_realm_that_does_not_exist(replay: Replay) -> None:
    # The replay serves the `antenna` realm only.
    other = connect_admin(replay.url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, realm="nope")
    with pytest.raises(NotFound, match="realm"):
        check_realm(other, RealmContract(realm="nope"))


def test_wrong_admin_credentials_are_refused_without_echoing_the_secret(replay: Replay) -> None:
    wrong = connect_admin(replay.url, client_id=CLIENT_ID, client_secret="not-the-secret")
    with pytest.raises(Forbidden) as caught:
        check_realm(wrong)
    assert "not-the-secret" not in str(caught.value)


def test_an_unreachable_keycloak(replay: Replay) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        gone = connect_admin(f"http://127.0.0.1:{port}", client_id=CLIENT_ID, client_secret="x", timeout=5)
        with pytest.raises(KeycloakUnavailable):
            check_realm(gone)

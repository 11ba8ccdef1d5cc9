"""The Keycloak realm the program declares, setting by setting (identity-contract.md).

The Pulumi CLI/engine and a Keycloak server cannot run here: the program runs under Pulumi's official mock
runtime (`pulumi.runtime.set_mocks`, offline) and these tests read the inputs it would send to the Keycloak
provider. Whether Keycloak then behaves as configured is checked at run time by `antenna realm check`.
"""

from __future__ import annotations

import json
import re

import pytest
from antenna_infra.identity import entitlement_regex

from tests.infra.harness import SECRET_SIG, TEST_SECRETS, Recording

IDP = "keycloak:oidc/identityProvider:IdentityProvider"
CLIENT = "keycloak:openid/client:Client"


def idp(rec: Recording) -> dict:
    (only,) = rec.of_type(IDP)
    return dict(only.inputs)


def client(rec: Recording, client_id: str) -> dict:
    (found,) = [r.inputs for r in rec.of_type(CLIENT) if r.inputs["clientId"] == client_id]
    return dict(found)


# --- the realm -------------------------------------------------------------------------------------------


def test_realm_is_antenna_and_allows_no_local_sign_up(dev: Recording) -> None:
    realm = dev.one("keycloak:index/realm:Realm", "identity-realm").inputs
    assert realm["realm"] == "antenna"
    assert realm["registrationAllowed"] is False
    assert realm["resetPasswordAllowed"] is False
    assert realm["loginWithEmailAllowed"] is False
    assert realm["editUsernameAllowed"] is False


def test_token_lifetimes_are_set_and_access_tokens_are_short(dev: Recording) -> None:
    realm = dev.one("keycloak:index/realm:Realm", "identity-realm").inputs
    assert realm["accessTokenLifespan"] == "5m"
    assert realm["ssoSessionIdleTimeout"] == "30m"
    assert realm["ssoSessionMaxLifespan"] == "10h"
    assert realm["offlineSessionMaxLifespanEnabled"] is True
    assert realm["oauth2DeviceCodeLifespan"] == "10m"
    assert realm["revokeRefreshToken"] is True


def test_realm_roles_exist(dev: Recording) -> None:
    names = {r.inputs["name"] for r in dev.of_type("keycloak:index/role:Role")}
    assert {"antenna-quota-admin", "antenna-operator"} <= names


# --- the MyAccessID identity provider --------------------------------------------------------------------


def test_idp_issuer_is_set_explicitly(dev: Recording, prod: Recording) -> None:
    assert idp(dev)["issuer"] == "https://proxy.acc.myaccessid.org"
    assert idp(prod)["issuer"] == "https://proxy.myaccessid.org"


def test_idp_validates_signatures_with_the_jwks_url(dev: Recording) -> None:
    assert idp(dev)["validateSignature"] is True
    assert idp(dev)["jwksUrl"] == "https://proxy.acc.myaccessid.org/OIDC/jwks"


def test_idp_uses_pkce_s256(dev: Recording) -> None:
    extra = idp(dev)["extraConfig"]
    assert extra["pkceEnabled"] == "true"
    assert extra["pkceMethod"] == "S256"


def test_idp_is_a_confidential_client_whose_secret_is_a_pulumi_secret(dev: Recording) -> None:
    config = idp(dev)
    assert config["extraConfig"]["clientAuthMethod"] == "client_secret_basic"
    assert config["clientSecret"] == {
        SECRET_SIG: "1b47061264138c4ac30d75fd1eb44270",
        "value": TEST_SECRETS["antenna:myaccessidClientSecret"],
    }


def test_prod_idp_secret_is_only_a_keycloak_vault_reference(prod: Recording) -> None:
    # The provider marks the field secret anyway; what it holds is a reference Keycloak resolves itself.
    assert idp(prod)["clientSecret"]["value"] == "${vault.myaccessid_client_secret}"


def test_idp_sync_mode_is_force(dev: Recording) -> None:
    assert idp(dev)["syncMode"] == "FORCE"


def test_idp_stores_no_upstream_tokens(dev: Recording) -> None:
    assert idp(dev)["storeToken"] is False
    assert idp(dev)["addReadTokenRoleOnCreate"] is False


def test_idp_does_not_trust_upstream_email(dev: Recording) -> None:
    assert idp(dev)["trustEmail"] is False


def test_idp_reads_userinfo_where_assurance_may_only_arrive(dev: Recording) -> None:
    assert idp(dev)["disableUserInfo"] is False
    assert idp(dev)["userInfoUrl"].endswith("/OIDC/userinfo")


# --- login flows -----------------------------------------------------------------------------------------


def executions_of(rec: Recording, flow_alias: str) -> list[dict]:
    return [
        dict(r.inputs)
        for r in rec.of_type("keycloak:authentication/execution:Execution")
        if r.inputs["parentFlowAlias"] == flow_alias
    ]


def test_first_broker_login_creates_if_unique_and_never_links(dev: Recording) -> None:
    alias = idp(dev)["firstBrokerLoginFlowAlias"]
    assert alias == "antenna-first-broker-login"
    assert [(e["authenticator"], e["requirement"]) for e in executions_of(dev, alias)] == [
        ("idp-create-user-if-unique", "REQUIRED")
    ]
    subflows = [
        r for r in dev.of_type("keycloak:authentication/subflow:Subflow") if r.inputs["parentFlowAlias"] == alias
    ]
    assert subflows == []
    every_authenticator = {
        r.inputs["authenticator"] for r in dev.of_type("keycloak:authentication/execution:Execution")
    }
    assert not every_authenticator & {"idp-auto-link", "idp-email-verification", "idp-confirm-link"}


def test_post_broker_login_refuses_people_in_no_project(dev: Recording) -> None:
    assert idp(dev)["postBrokerLoginFlowAlias"] == "antenna-post-broker-login"
    (subflow,) = [
        r.inputs
        for r in dev.of_type("keycloak:authentication/subflow:Subflow")
        if r.inputs["parentFlowAlias"] == "antenna-post-broker-login"
    ]
    assert subflow["requirement"] == "CONDITIONAL"
    steps = executions_of(dev, subflow["alias"])
    assert [(e["authenticator"], e["requirement"]) for e in sorted(steps, key=lambda e: e["priority"])] == [
        ("conditional-user-role", "REQUIRED"),
        ("deny-access-authenticator", "REQUIRED"),
    ]
    (condition,) = dev.of_type("keycloak:authentication/executionConfig:ExecutionConfig")
    assert condition.inputs["config"] == {"condUserRole": "antenna-member", "negate": "true"}


def test_project_groups_and_staff_roles_hold_the_sign_in_role(dev: Recording) -> None:
    roles = {r.inputs["name"]: r for r in dev.of_type("keycloak:index/role:Role")}
    member_urn = roles["antenna-member"].urn
    (grant,) = dev.of_type("keycloak:index/groupRoles:GroupRoles")
    assert grant.deps["roleIds"] == (member_urn,)
    assert dev.by_urn(grant.deps["groupId"][0]).inputs["name"] == "projects"
    for staff in ("antenna-quota-admin", "antenna-operator"):
        assert roles[staff].deps["compositeRoles"] == (member_urn,)


# --- mappers and user attributes -------------------------------------------------------------------------


def test_username_is_the_myaccessid_sub(dev: Recording) -> None:
    (mapper,) = dev.of_type(
        "keycloak:index/userTemplateImporterIdentityProviderMapper:UserTemplateImporterIdentityProviderMapper"
    )
    assert mapper.inputs["template"] == "${CLAIM.sub}"
    assert mapper.inputs["extraConfig"] == {"syncMode": "FORCE"}


def test_sub_entitlements_and_assurance_are_imported_with_force_sync(dev: Recording) -> None:
    importers = dev.of_type(
        "keycloak:index/attributeImporterIdentityProviderMapper:AttributeImporterIdentityProviderMapper"
    )
    assert {(m.inputs["claimName"], m.inputs["userAttribute"]) for m in importers} == {
        ("sub", "myaccessid_cuid"),
        ("eduperson_entitlement", "eduperson_entitlement"),
        ("eduperson_assurance", "eduperson_assurance"),
    }
    assert all(m.inputs["extraConfig"]["syncMode"] == "FORCE" for m in importers)


def test_imported_attributes_are_admin_only(dev: Recording) -> None:
    (profile,) = dev.of_type("keycloak:index/realmUserProfile:RealmUserProfile")
    attributes = {a["name"]: a for a in profile.inputs["attributes"]}
    for name in ("myaccessid_cuid", "eduperson_entitlement", "eduperson_assurance"):
        assert attributes[name]["permissions"] == {"views": ["admin"], "edits": ["admin"]}
    # What MyAccessID syncs is not the person's to edit either.
    assert attributes["email"]["permissions"]["edits"] == ["admin"]
    assert "unmanagedAttributePolicy" not in profile.inputs


def group_paths(rec: Recording) -> set[str]:
    groups = rec.of_type("keycloak:index/group:Group")

    def path(group) -> str:
        parent = group.deps.get("parentId")
        prefix = path(rec.by_urn(parent[0])) if parent else ""
        return f"{prefix}/{group.inputs['name']}"

    return {path(g) for g in groups}


def test_every_project_has_a_group_and_a_pi_subgroup(dev: Recording) -> None:
    assert group_paths(dev) == {
        "/projects",
        "/projects/ai4belgium",
        "/projects/ai4belgium/pi",
        "/projects/antenna-pilot",
        "/projects/antenna-pilot/pi",
    }


def test_entitlements_map_to_project_groups_with_force_sync(dev: Recording) -> None:
    mappers = dev.of_type("keycloak:index/customIdentityProviderMapping:CustomIdentityProviderMapping")
    by_group = {m.inputs["extraConfig"]["group"]: m.inputs for m in mappers}
    # antenna-pilot's membership is local (add-member), so no mapper would undo it.
    assert set(by_group) == {"/projects/ai4belgium", "/projects/ai4belgium/pi"}
    for mapper in by_group.values():
        assert mapper["identityProviderMapper"] == "oidc-advanced-group-idp-mapper"
        assert mapper["extraConfig"]["syncMode"] == "FORCE"
        assert mapper["extraConfig"]["are.claim.values.regex"] == "true"
        (claim,) = json.loads(mapper["extraConfig"]["claims"])
        assert claim["key"] == "eduperson_entitlement"


def _java_to_python(regex: str) -> re.Pattern[str]:
    # Keycloak evaluates Java regexes; the only Java-only syntax used is \Q...\E quoting.
    return re.compile(re.sub(r"\\Q(.*?)\\E", lambda m: re.escape(m.group(1)), regex))


@pytest.mark.parametrize(
    ("entitlement", "member", "pi"),
    [
        ("urn:geant:antenna.be:group:projects:ai4belgium", True, False),
        ("urn:geant:antenna.be:group:projects:ai4belgium:role=member", True, False),
        ("urn:geant:antenna.be:group:projects:ai4belgium:role=pi", True, True),
        ("urn:geant:antenna.be:group:projects:ai4belgium:role=pi#aai.egi.eu", True, True),
        ("urn:geant:antenna.be:group:projects:ai4belgium:sub", True, False),
        ("urn:geant:antenna.be:group:projects:ai4belgium:sub:role=pi", True, False),
        ("urn:geant:antenna.be:group:projects:ai4belgium2", False, False),
        ("urn:geant:antenna.be:group:projects:ai4belgium-old:role=pi", False, False),
        ("urn:geant:elsewhere.org:group:projects:ai4belgium:role=pi", False, False),
        ("urn:geant:antenna.be:group:projects", False, False),
    ],
)
def test_entitlement_patterns(entitlement: str, member: bool, pi: bool) -> None:
    namespaces = ["urn:geant:antenna.be"]
    member_re = _java_to_python(entitlement_regex(namespaces, "ai4belgium", pi=False))
    pi_re = _java_to_python(entitlement_regex(namespaces, "ai4belgium", pi=True))
    assert bool(member_re.fullmatch(entitlement)) is member
    assert bool(pi_re.fullmatch(entitlement)) is pi


def test_the_mapper_carries_the_tested_pattern(dev: Recording) -> None:
    mappers = dev.of_type("keycloak:index/customIdentityProviderMapping:CustomIdentityProviderMapping")
    by_group = {
        m.inputs["extraConfig"]["group"]: json.loads(m.inputs["extraConfig"]["claims"])[0]["value"] for m in mappers
    }
    assert by_group["/projects/ai4belgium/pi"] == entitlement_regex(["urn:geant:antenna.be"], "ai4belgium", pi=True)


# --- clients ---------------------------------------------------------------------------------------------


def test_cli_is_public_and_device_grant_only(dev: Recording) -> None:
    cli = client(dev, "antenna-cli")
    assert cli["accessType"] == "PUBLIC"
    assert cli["oauth2DeviceAuthorizationGrantEnabled"] is True
    assert cli["standardFlowEnabled"] is False
    assert cli["implicitFlowEnabled"] is False
    assert cli["directAccessGrantsEnabled"] is False
    assert cli["serviceAccountsEnabled"] is False


def test_portal_is_confidential_code_flow_with_pkce(dev: Recording) -> None:
    portal = client(dev, "antenna-portal")
    assert portal["accessType"] == "CONFIDENTIAL"
    assert portal["standardFlowEnabled"] is True
    assert portal["pkceCodeChallengeMethod"] == "S256"
    assert portal["implicitFlowEnabled"] is False
    assert portal["directAccessGrantsEnabled"] is False
    assert portal["validRedirectUris"] == ["https://portal.dev.antenna.example/oauth/callback"]


def test_grafana_is_confidential_code_flow_with_pkce(dev: Recording) -> None:
    grafana = client(dev, "antenna-grafana")
    assert grafana["accessType"] == "CONFIDENTIAL"
    assert grafana["pkceCodeChallengeMethod"] == "S256"
    assert grafana["validRedirectUris"] == ["https://grafana.dev.antenna.example/login/generic_oauth"]
    assert grafana["directAccessGrantsEnabled"] is False


@pytest.mark.parametrize("client_id", ["antenna-cli", "antenna-portal", "antenna-grafana"])
def test_full_scope_is_off(dev: Recording, client_id: str) -> None:
    assert client(dev, client_id)["fullScopeAllowed"] is False


@pytest.mark.parametrize("client_id", ["antenna-cli", "antenna-portal", "antenna-grafana"])
def test_access_tokens_are_rfc9068_at_jwt(dev: Recording, client_id: str) -> None:
    assert client(dev, client_id)["extraConfig"]["access.token.header.type.rfc9068"] == "true"


def default_scopes(rec: Recording, client_id: str) -> list[str]:
    (client_res,) = [r for r in rec.of_type(CLIENT) if r.inputs["clientId"] == client_id]
    (scopes,) = [
        r
        for r in rec.of_type("keycloak:openid/clientDefaultScopes:ClientDefaultScopes")
        if r.deps["clientId"] == (client_res.urn,)
    ]
    return list(scopes.inputs["defaultScopes"])


def test_gateway_scope_adds_the_gateway_audience_to_access_tokens(dev: Recording) -> None:
    (mapper,) = dev.of_type("keycloak:openid/audienceProtocolMapper:AudienceProtocolMapper")
    assert mapper.inputs["includedCustomAudience"] == "antenna-gateway"
    assert mapper.inputs["addToAccessToken"] is True
    assert dev.by_urn(mapper.deps["clientScopeId"][0]).inputs["name"] == "antenna-gateway"


@pytest.mark.parametrize("client_id", ["antenna-cli", "antenna-portal"])
def test_gateway_token_clients_get_the_audience_scope_by_default(dev: Recording, client_id: str) -> None:
    assert "antenna-gateway" in default_scopes(dev, client_id)
    # Keycloak 25+ puts `sub` in the `basic` scope; without it tokens name nobody.
    assert "basic" in default_scopes(dev, client_id)


def test_grafana_gets_no_gateway_tokens(dev: Recording) -> None:
    assert "antenna-gateway" not in default_scopes(dev, "antenna-grafana")


def test_keycloaks_own_admin_cli_is_taken_over_without_the_password_grant(dev: Recording) -> None:
    admin_cli = client(dev, "admin-cli")
    assert admin_cli["import"] is True
    assert admin_cli["directAccessGrantsEnabled"] is False
    assert admin_cli["implicitFlowEnabled"] is False


def test_no_client_has_optional_scopes(dev: Recording) -> None:
    optional = dev.of_type("keycloak:openid/clientOptionalScopes:ClientOptionalScopes")
    assert len(optional) == 3
    assert all(r.inputs["optionalScopes"] == [] for r in optional)


def test_gateway_clients_may_carry_the_staff_roles(dev: Recording) -> None:
    roles = {r.urn: r.inputs["name"] for r in dev.of_type("keycloak:index/role:Role")}
    clients = {r.urn: r.inputs["clientId"] for r in dev.of_type(CLIENT)}
    mapped = {
        (clients[m.deps["clientId"][0]], roles[m.deps["roleId"][0]])
        for m in dev.of_type("keycloak:index/genericRoleMapper:GenericRoleMapper")
    }
    assert mapped == {
        ("antenna-cli", "antenna-quota-admin"),
        ("antenna-cli", "antenna-operator"),
        ("antenna-portal", "antenna-quota-admin"),
        ("antenna-portal", "antenna-operator"),
        ("antenna-grafana", "antenna-operator"),
    }


def test_gateway_scope_carries_groups_and_the_myaccessid_identifier(dev: Recording) -> None:
    (groups,) = dev.of_type("keycloak:openid/groupMembershipProtocolMapper:GroupMembershipProtocolMapper")
    assert groups.inputs["claimName"] == "groups"
    assert groups.inputs["fullPath"] is True
    attrs = dev.of_type("keycloak:openid/userAttributeProtocolMapper:UserAttributeProtocolMapper")
    assert {a.inputs["claimName"] for a in attrs} == {"myaccessid_cuid", "eduperson_entitlement"}


# --- structure -------------------------------------------------------------------------------------------


def test_every_keycloak_resource_belongs_to_the_identity_component(dev: Recording) -> None:
    (component,) = dev.of_type("antenna:index:Identity")
    keycloak = [r for r in dev.resources if r.type.startswith("keycloak:")]
    assert len(keycloak) > 40
    assert all(r.parent == component.urn for r in keycloak)
    assert dev.children(component) == keycloak

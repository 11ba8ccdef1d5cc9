"""Claim mapping: Keycloak group paths and AARC-G069 entitlements to projects, person and roles."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import InvalidToken
from gateway.identity import (
    Principal,
    Role,
    parse_entitlement,
    principal_from_claims,
    projects_from_entitlements,
    projects_from_groups,
)
from gateway.settings import OIDCSettings

NS = "urn:geant:antenna.be"
OIDC = OIDCSettings()


def principal(**claims: Any) -> Principal:
    return principal_from_claims({"sub": "s-1", **claims}, OIDC)


# -- Keycloak groups -----------------------------------------------------------------------------


def test_project_group_makes_a_member() -> None:
    assert projects_from_groups(["/projects/ai4belgium"], OIDC) == {"ai4belgium": Role.MEMBER}


def test_pi_group_makes_a_pi_and_implies_the_project() -> None:
    p = principal(groups=["/projects/ai4belgium/pi"])
    assert p.is_pi("ai4belgium")
    assert p.is_member("ai4belgium")


def test_pi_wins_whatever_the_order() -> None:
    groups = ["/projects/x/pi", "/projects/x", "/projects/y", "/projects/y/pi"]
    assert projects_from_groups(groups, OIDC) == {"x": Role.PI, "y": Role.PI}


def test_other_subgroup_of_a_project_makes_a_member_only() -> None:
    assert projects_from_groups(["/projects/x/gpu-team", "/projects/y/pi/z"], OIDC) == {
        "x": Role.MEMBER,
        "y": Role.MEMBER,
    }


@pytest.mark.parametrize(
    "group",
    ["/project/x", "/projectsx", "projects/x", "/other/projects/x", "/projects/", "/projects//pi", "/projects/a b"],
)
def test_groups_outside_the_projects_tree_grant_nothing(group: str) -> None:
    assert projects_from_groups([group], OIDC) == {}


def test_projects_group_is_configurable() -> None:
    oidc = OIDCSettings(projects_group="/antenna/projects/")
    groups = ["/antenna/projects/x/pi", "/projects/y"]
    assert projects_from_groups(groups, oidc) == {"x": Role.PI}


# -- AARC-G069 entitlements ----------------------------------------------------------------------


def test_the_contracts_example_makes_a_pi() -> None:
    p = principal(eduperson_entitlement=[f"{NS}:group:projects:ai4belgium:role=pi"])
    assert dict(p.projects) == {"ai4belgium": Role.PI}


def test_group_authority_is_ignored() -> None:
    values = [
        f"{NS}:group:projects:ai4belgium:role=pi#aai.egi.eu",
        f"{NS}:group:projects:demo#perun.example.org",
    ]
    assert projects_from_entitlements(values, OIDC) == {"ai4belgium": Role.PI, "demo": Role.MEMBER}


def test_subgroup_implies_the_project() -> None:
    values = [f"{NS}:group:projects:ai4belgium:gpu:role=member", f"{NS}:group:projects:demo:sub:deeper"]
    assert projects_from_entitlements(values, OIDC) == {"ai4belgium": Role.MEMBER, "demo": Role.MEMBER}


def test_pi_of_a_subgroup_is_not_pi_of_the_project() -> None:
    values = [f"{NS}:group:projects:ai4belgium:gpu:role=pi"]
    assert projects_from_entitlements(values, OIDC) == {"ai4belgium": Role.MEMBER}


def test_member_role_and_no_role_make_a_member() -> None:
    values = [f"{NS}:group:projects:a:role=member", f"{NS}:group:projects:b"]
    assert projects_from_entitlements(values, OIDC) == {"a": Role.MEMBER, "b": Role.MEMBER}


@pytest.mark.parametrize(
    "value",
    [
        "urn:geant:evil.example:group:projects:ai4belgium:role=pi",  # namespace not allow-listed
        f"{NS}.evil.example:group:projects:ai4belgium:role=pi",  # allow-listed namespace as a prefix
        f"{NS}:group:staff:role=pi",  # not under the projects group
        f"{NS}:group:projects:role=pi",  # no project
        f"{NS}:group:projects:ai4belgium:role=owner",  # a role the gateway does not know
    ],
)
def test_entitlement_outside_the_rules_grants_nothing(value: str) -> None:
    assert projects_from_entitlements([value], OIDC) == {}


@pytest.mark.parametrize(
    "value",
    [
        f"{NS}:group:",
        f"{NS}:group",
        f"{NS}:projects:ai4belgium",  # no `group` keyword
        f"{NS}:group:projects::ai4belgium",  # empty subgroup
        f"{NS}:group:projects:ai4belgium:role=",  # empty role
        f"{NS}:group:projects:role=pi:ai4belgium",  # role not last
        f"{NS}:group:projects:ai 4belgium",  # space
        f"{NS}:group:projects:ai4belgium?x=1",  # URN query component
        "",
    ],
)
def test_unparsable_entitlement_grants_nothing(value: str) -> None:
    assert parse_entitlement(value, [NS]) is None
    assert projects_from_entitlements([value], OIDC) == {}


def test_parse_entitlement_structure() -> None:
    parsed = parse_entitlement(f"{NS}:group:projects:ai4belgium:gpu:role=pi#authority", [NS])
    assert parsed is not None
    assert (parsed.namespace, parsed.groups, parsed.role) == (NS, ("projects", "ai4belgium", "gpu"), "pi")


def test_namespaces_and_projects_group_are_configurable() -> None:
    oidc = OIDCSettings(entitlement_namespaces=["urn:mace:egi.eu", NS], entitlement_projects_group="antenna")
    values = ["urn:mace:egi.eu:group:antenna:x:role=pi", f"{NS}:group:projects:y"]
    assert projects_from_entitlements(values, oidc) == {"x": Role.PI}


def test_entitlement_claim_may_be_a_single_string() -> None:
    assert principal(eduperson_entitlement=f"{NS}:group:projects:x").is_member("x")


# -- sources and merging ---------------------------------------------------------------------------


def test_both_sources_merge_and_pi_from_either_wins() -> None:
    p = principal(
        groups=["/projects/a", "/projects/b/pi"],
        eduperson_entitlement=[f"{NS}:group:projects:a:role=pi", f"{NS}:group:projects:b", f"{NS}:group:projects:c"],
    )
    assert dict(p.projects) == {"a": Role.PI, "b": Role.PI, "c": Role.MEMBER}


def test_only_configured_sources_count() -> None:
    claims = {"sub": "s", "groups": ["/projects/a"], "eduperson_entitlement": [f"{NS}:group:projects:b"]}
    groups_only = principal_from_claims(claims, OIDCSettings(project_sources=["groups"]))
    entitlements_only = principal_from_claims(claims, OIDCSettings(project_sources=["entitlements"]))
    assert dict(groups_only.projects) == {"a": Role.MEMBER}
    assert dict(entitlements_only.projects) == {"b": Role.MEMBER}


def test_malformed_claim_values_grant_nothing() -> None:
    p = principal(groups={"/projects/a": True}, eduperson_entitlement=[7, None], realm_access=["x"])
    assert dict(p.projects) == {}
    assert p.roles == frozenset()


# -- person and roles ----------------------------------------------------------------------------


def test_person_is_the_person_claim_lower_cased() -> None:
    assert principal(myaccessid_cuid="ABCdef@MyAccessID.org").person == "abcdef@myaccessid.org"


def test_person_claim_is_configurable() -> None:
    oidc = OIDCSettings(person_claim="voperson_id")
    p = principal_from_claims({"sub": "S", "voperson_id": "Me@Example.org", "myaccessid_cuid": "x"}, oidc)
    assert p.person == "me@example.org"


def test_empty_person_claim_falls_back_to_sub() -> None:
    assert principal(myaccessid_cuid="").person == "s-1"


def test_refused_person_is_an_invalid_token() -> None:
    with pytest.raises(InvalidToken) as caught:
        principal(myaccessid_cuid="TEST@myaccessid.org")
    assert caught.value.extra["reason"] == "refused_person"


def test_refused_persons_are_configurable() -> None:
    oidc = OIDCSettings(refused_persons=["Guest@Example.org"])
    with pytest.raises(InvalidToken):
        principal_from_claims({"sub": "guest@example.org"}, oidc)
    assert principal_from_claims({"sub": "test@myaccessid.org"}, oidc).person == "test@myaccessid.org"


def test_roles_from_realm_access() -> None:
    p = principal(realm_access={"roles": ["antenna-operator", "offline_access"]})
    assert p.has_role("antenna-operator")
    assert not p.has_role("antenna-quota-admin")


def test_roles_claim_is_a_configurable_dotted_path() -> None:
    oidc = OIDCSettings(roles_claim="resource_access.antenna-gateway.roles")
    claims = {
        "sub": "s",
        "realm_access": {"roles": ["antenna-operator"]},
        "resource_access": {"antenna-gateway": {"roles": ["antenna-quota-admin"]}},
    }
    assert principal_from_claims(claims, oidc).roles == frozenset({"antenna-quota-admin"})


def test_principal_projects_cannot_be_changed() -> None:
    source = {"a": Role.MEMBER}
    p = Principal(person="p", subject="s", projects=source)
    source["b"] = Role.PI
    assert not p.is_member("b")
    with pytest.raises(TypeError):
        p.projects["c"] = Role.PI  # type: ignore[index]

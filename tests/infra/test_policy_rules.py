"""The Pulumi policy rules (policies/pulumi): directly, then over what the program registers, then over
deliberately broken variants of the program, each of which a rule must catch.

The PolicyPack wrapper is not imported: creating a PolicyPack starts a gRPC server and blocks. The Pulumi
engine cannot run here, so the program runs under Pulumi's mock runtime and the rules see the recorded inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi_keycloak
import pulumi_kubernetes
import pytest
from antenna_policies.rules import (
    Resource,
    client_code_flow_uses_pkce,
    client_has_no_password_or_implicit_grant,
    gateway_clients_carry_audience,
    idp_keeps_no_tokens_and_trusts_no_email,
    idp_uses_pkce,
    idp_validates_signature_and_issuer,
    vault_policy_grants_no_sudo_or_sys_wildcard,
    violations,
    workload_runs_as_non_root_with_limits,
)
from antenna_policies.vault_hcl import PolicyParseError, capabilities_by_path, pattern_matches

from tests.infra.harness import GATEWAY_POLICY, Recording, make_repo, run_program, stack_file

IDP = "keycloak:oidc/identityProvider:IdentityProvider"
CLIENT = "keycloak:openid/client:Client"
GOOD_IDP = {
    "issuer": "https://proxy.myaccessid.org",
    "validateSignature": True,
    "jwksUrl": "https://proxy.myaccessid.org/OIDC/jwks",
    "storeToken": False,
    "trustEmail": False,
    "extraConfig": {"pkceEnabled": "true", "pkceMethod": "S256"},
}


def res(type_: str, props: dict[str, Any], name: str = "r", deps: dict[str, tuple[str, ...]] | None = None) -> Resource:
    return Resource(type=type_, name=name, urn=f"urn:{name}", props=props, deps=deps or {})


# --- rules, directly -------------------------------------------------------------------------------------


def test_a_correct_identity_provider_passes_every_idp_rule() -> None:
    r = res(IDP, GOOD_IDP)
    assert idp_validates_signature_and_issuer(r) == []
    assert idp_keeps_no_tokens_and_trusts_no_email(r) == []
    assert idp_uses_pkce(r) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"validateSignature": False}, "validateSignature must be true"),
        ({"validateSignature": None}, "validateSignature must be true"),
        ({"issuer": ""}, "issuer must be set"),
        ({"issuer": None}, "issuer must be set"),
        ({"jwksUrl": None}, "jwksUrl must be set"),
    ],
)
def test_idp_without_signature_validation_or_issuer_fails(change: dict[str, Any], expected: str) -> None:
    (message,) = idp_validates_signature_and_issuer(res(IDP, {**GOOD_IDP, **change}, name="myaccessid"))
    assert expected in message
    assert "myaccessid" in message


def test_idp_left_on_the_default_token_storage_fails() -> None:
    props = {k: v for k, v in GOOD_IDP.items() if k != "storeToken"}
    assert idp_keeps_no_tokens_and_trusts_no_email(res(IDP, props)) != []
    assert idp_keeps_no_tokens_and_trusts_no_email(res(IDP, {**GOOD_IDP, "trustEmail": True})) != []


def test_idp_without_pkce_s256_fails() -> None:
    assert idp_uses_pkce(res(IDP, {**GOOD_IDP, "extraConfig": {"pkceEnabled": "true", "pkceMethod": "plain"}}))
    assert idp_uses_pkce(res(IDP, {**GOOD_IDP, "extraConfig": {}}))


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        ({"clientId": "c", "directAccessGrantsEnabled": True}, ["client c: direct access grants must be off"]),
        ({"clientId": "c", "implicitFlowEnabled": True}, ["client c: the implicit flow must be off"]),
        ({"clientId": "c", "directAccessGrantsEnabled": False, "implicitFlowEnabled": False}, []),
    ],
)
def test_clients_with_password_or_implicit_grants_fail(props: dict[str, Any], expected: list[str]) -> None:
    assert client_has_no_password_or_implicit_grant(res(CLIENT, props)) == expected


def test_code_flow_clients_need_pkce() -> None:
    assert client_code_flow_uses_pkce(res(CLIENT, {"clientId": "p", "standardFlowEnabled": True})) != []
    ok = {"clientId": "p", "standardFlowEnabled": True, "pkceCodeChallengeMethod": "S256"}
    assert client_code_flow_uses_pkce(res(CLIENT, ok)) == []
    assert client_code_flow_uses_pkce(res(CLIENT, {"clientId": "cli", "standardFlowEnabled": False})) == []


def audience_stack(*, audience: str = "antenna-gateway", scopes: list[str] | None = None) -> list[Resource]:
    return [
        res(CLIENT, {"clientId": "antenna-cli"}, name="cli"),
        res("keycloak:openid/clientScope:ClientScope", {"name": "antenna-gateway"}, name="scope"),
        res(
            "keycloak:openid/audienceProtocolMapper:AudienceProtocolMapper",
            {"includedCustomAudience": audience, "addToAccessToken": True},
            name="aud",
            deps={"clientScopeId": ("urn:scope",)},
        ),
        res(
            "keycloak:openid/clientDefaultScopes:ClientDefaultScopes",
            {"defaultScopes": scopes if scopes is not None else ["basic", "antenna-gateway"]},
            name="defaults",
            deps={"clientId": ("urn:cli",)},
        ),
    ]


def test_gateway_client_with_the_audience_scope_passes() -> None:
    assert gateway_clients_carry_audience(audience_stack()) == []


def test_gateway_client_without_the_audience_scope_fails() -> None:
    (message,) = gateway_clients_carry_audience(audience_stack(scopes=["basic", "profile"]))
    assert "antenna-cli" in message


def test_audience_scope_with_the_wrong_audience_fails() -> None:
    assert gateway_clients_carry_audience(audience_stack(audience="account")) != []


def test_an_audience_mapper_on_the_client_itself_also_passes() -> None:
    stack = [
        res(CLIENT, {"clientId": "antenna-portal"}, name="portal"),
        res(
            "keycloak:openid/audienceProtocolMapper:AudienceProtocolMapper",
            {"includedCustomAudience": "antenna-gateway"},
            name="aud",
            deps={"clientId": ("urn:portal",)},
        ),
    ]
    assert gateway_clients_carry_audience(stack) == []


def vault_policy(text: str) -> Resource:
    return res("vault:index/policy:Policy", {"name": "p", "policy": text})


@pytest.mark.parametrize(
    "text",
    [
        'path "auth/token/*" { capabilities = ["create", "sudo"] }',
        'path "sys/auth/+" { capabilities = ["update", "sudo"] }',
        'path "sys/seal" { capabilities = ["update", "sudo"] }',
        'path "sys/audit/file" { capabilities = ["delete", "sudo"] }',
        'path "sys/raw/logical/x" { capabilities = ["read", "sudo"] }',
        'path "secret/x" { capabilities = ["root"] }',
        'path "sys/*" { capabilities = ["read"] }',
        'path "*" { capabilities = ["read", "list"] }',
        'path "sys*" { capabilities = ["update"] }',
        '# comment\npath "antenna/data/x" {\n  capabilities = ["read"]\n}\npath "+/*" { capabilities = ["read"] }',
        '{"path": {"sys/*": {"capabilities": ["read"]}}}',
        'path "sys/policy/antenna-gateway" { policy = "sudo" }',
    ],
)
def test_vault_policies_granting_sudo_or_all_of_sys_fail(text: str) -> None:
    assert vault_policy_grants_no_sudo_or_sys_wildcard(vault_policy(text)) != []


@pytest.mark.parametrize(
    "text",
    [
        GATEWAY_POLICY,
        'path "sys/policies/acl/*" { capabilities = ["read", "list"] }',
        'path "sys/leases/renew" { capabilities = ["update"] }',
        # Enabling an auth method needs sudo on its exact path; the Antenna's deploy policy does that.
        'path "sys/auth/approle" { capabilities = ["create", "update", "sudo"] }',
        'path "sys/leases/revoke-prefix/database/creds/antenna-gateway" { capabilities = ["update", "sudo"] }',
        'path "*" { capabilities = ["deny"] }',
        '/* block comment */ path "antenna/*" { capabilities = ["read"] allowed_parameters = { "a" = [] } }',
    ],
)
def test_narrow_vault_policies_pass(text: str) -> None:
    assert vault_policy_grants_no_sudo_or_sys_wildcard(vault_policy(text)) == []


def test_unreadable_vault_policy_is_refused_rather_than_passed() -> None:
    (message,) = vault_policy_grants_no_sudo_or_sys_wildcard(vault_policy('path "x" { capabilities = ['))
    assert "cannot be read" in message


def test_hcl_reader() -> None:
    text = 'path "a/*" { capabilities = ["read"] }\npath "b" { capabilities = ["list", "read"] }'
    assert capabilities_by_path(text) == {"a/*": ["read"], "b": ["list", "read"]}
    with pytest.raises(PolicyParseError):
        capabilities_by_path('path "a" { capabilities = ["read"] } }')


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("sys/*", "sys/seal", True),
        ("sys/+/root", "sys/policy/root", True),
        ("sys/+/root", "sys/policy/x/root", False),
        ("sys/seal", "sys/seal", True),
        ("sys/seal", "sys/sealx", False),
        ("a+b/*", "a+b/c", True),
    ],
)
def test_vault_pattern_matching(pattern: str, path: str, matches: bool) -> None:
    assert pattern_matches(pattern, path) is matches


def deployment(container: dict[str, Any], pod_security: dict[str, Any] | None = None) -> Resource:
    spec = {"containers": [{"name": "c", **container}]}
    if pod_security is not None:
        spec["securityContext"] = pod_security
    return res("kubernetes:apps/v1:Deployment", {"spec": {"template": {"spec": spec}}}, name="gw")


LIMITS = {"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}


@pytest.mark.parametrize(
    ("container", "pod_security", "expected"),
    [
        (LIMITS, None, "runs as root"),
        ({**LIMITS, "securityContext": {"runAsUser": 0}}, {"runAsNonRoot": True}, "runs as root"),
        ({**LIMITS, "securityContext": {"runAsNonRoot": False}}, {"runAsNonRoot": True}, "runs as root"),
        ({**LIMITS, "securityContext": {"runAsNonRoot": True, "privileged": True}}, None, "privileged"),
        ({"resources": {"limits": {"cpu": "1"}}}, {"runAsNonRoot": True}, "no memory limit"),
        ({}, {"runAsNonRoot": True}, "no cpu or memory limit"),
    ],
)
def test_root_or_unlimited_workloads_fail(container: dict, pod_security: dict | None, expected: str) -> None:
    messages = workload_runs_as_non_root_with_limits(deployment(container, pod_security))
    assert any(expected in m for m in messages), messages


def test_non_root_limited_workloads_pass() -> None:
    assert workload_runs_as_non_root_with_limits(deployment(LIMITS, {"runAsNonRoot": True})) == []
    assert workload_runs_as_non_root_with_limits(deployment({**LIMITS, "securityContext": {"runAsUser": 1000}})) == []


def test_cron_job_init_containers_are_checked() -> None:
    cron = res(
        "kubernetes:batch/v1:CronJob",
        {
            "spec": {
                "jobTemplate": {
                    "spec": {
                        "template": {
                            "spec": {
                                "securityContext": {"runAsNonRoot": True},
                                "initContainers": [{"name": "init"}],
                                "containers": [{"name": "main", **LIMITS}],
                            }
                        }
                    }
                }
            }
        },
    )
    (message,) = workload_runs_as_non_root_with_limits(cron)
    assert "container init" in message


# --- the rules over the program --------------------------------------------------------------------------


def test_the_program_passes_every_rule(dev: Recording, prod: Recording) -> None:
    assert violations(dev.views()) == {}
    assert violations(prod.views()) == {}


def test_the_rules_see_the_resources_they_judge(dev: Recording) -> None:
    types = {r.type for r in dev.views()}
    assert {IDP, CLIENT, "vault:index/policy:Policy", "kubernetes:apps/v1:Deployment"} <= types


def _override(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, **overrides: Any) -> None:
    """Replace `module.name` by a subclass whose constructor forces `overrides`: an edited program."""
    original = getattr(module, name)

    class Edited(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, **overrides})

    monkeypatch.setattr(module, name, Edited)


@pytest.fixture
def broken(monkeypatch: pytest.MonkeyPatch, repo_root: Path) -> Callable[[Any], dict[str, list[str]]]:
    """Run a variant of the program with one edit; yields a function returning the rule violations."""

    def run(edit: Any) -> dict[str, list[str]]:
        edit(monkeypatch)
        return violations(run_program(stack_file("dev"), repo_root=repo_root).views())

    return run


def test_variant_without_signature_validation_is_caught(broken: Any) -> None:
    found = broken(lambda mp: _override(mp, pulumi_keycloak.oidc, "IdentityProvider", validate_signature=False))
    assert list(found) == ["keycloak-idp-signature-and-issuer"]


def test_variant_without_issuer_is_caught(broken: Any) -> None:
    found = broken(lambda mp: _override(mp, pulumi_keycloak.oidc, "IdentityProvider", issuer=None))
    assert list(found) == ["keycloak-idp-signature-and-issuer"]


def test_variant_with_direct_access_grants_is_caught(broken: Any) -> None:
    found = broken(lambda mp: _override(mp, pulumi_keycloak.openid, "Client", direct_access_grants_enabled=True))
    assert list(found) == ["keycloak-client-no-password-or-implicit-grant"]
    assert len(found["keycloak-client-no-password-or-implicit-grant"]) == 4  # every client, admin-cli too


def test_variant_with_the_implicit_flow_is_caught(broken: Any) -> None:
    found = broken(lambda mp: _override(mp, pulumi_keycloak.openid, "Client", implicit_flow_enabled=True))
    assert list(found) == ["keycloak-client-no-password-or-implicit-grant"]


def test_variant_without_the_audience_scope_is_caught(broken: Any) -> None:
    found = broken(
        lambda mp: _override(mp, pulumi_keycloak.openid, "ClientDefaultScopes", default_scopes=["basic", "roles"])
    )
    assert list(found) == ["keycloak-gateway-clients-audience"]
    assert len(found["keycloak-gateway-clients-audience"]) == 2


def test_variant_with_a_sudo_vault_policy_is_caught(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path,
        {
            "antenna-gateway": GATEWAY_POLICY,
            "antenna-operator": 'path "sys/*" { capabilities = ["create", "update", "sudo"] }',
        },
    )
    found = violations(run_program(stack_file("dev"), repo_root=repo).views())
    assert list(found) == ["vault-policy-no-sudo-no-sys-wildcard"]
    assert len(found["vault-policy-no-sudo-no-sys-wildcard"]) == 2


def test_variant_running_as_root_is_caught(broken: Any) -> None:
    def edit(mp: pytest.MonkeyPatch) -> None:
        core = pulumi_kubernetes.core.v1
        _override(mp, core, "SecurityContextArgs", run_as_non_root=None, run_as_user=0)
        _override(mp, core, "PodSecurityContextArgs", run_as_non_root=None, run_as_user=None)

    found = broken(edit)
    assert list(found) == ["kubernetes-workload-non-root-with-limits"]


def test_variant_without_limits_is_caught(broken: Any) -> None:
    found = broken(lambda mp: _override(mp, pulumi_kubernetes.core.v1, "ResourceRequirementsArgs", limits=None))
    (message,) = found["kubernetes-workload-non-root-with-limits"]
    assert "no cpu or memory limit" in message

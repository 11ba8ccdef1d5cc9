"""The deployment rules, as plain functions over a neutral view of resources.

A resource rule returns the violations of one resource; a stack rule those of the whole stack. The thin
PolicyPack in `__main__.py` feeds them Pulumi's resources; tests feed them directly, or what the mock
runtime recorded while running the program.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from antenna_policies.vault_hcl import PolicyParseError, capabilities_by_path, pattern_matches

# Pulumi's marker for a secret value on the wire (what the mock runtime records).
_SECRET_SIG = "4dabf18193072939515e22adb298388d"  # noqa: S105 - a marker, not a secret

IDP = "keycloak:oidc/identityProvider:IdentityProvider"
CLIENT = "keycloak:openid/client:Client"
CLIENT_SCOPE = "keycloak:openid/clientScope:ClientScope"
CLIENT_DEFAULT_SCOPES = "keycloak:openid/clientDefaultScopes:ClientDefaultScopes"
AUDIENCE_MAPPER = "keycloak:openid/audienceProtocolMapper:AudienceProtocolMapper"
VAULT_POLICY = "vault:index/policy:Policy"
_POD_TEMPLATE_PATHS = {
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "kubernetes:core/v1:Pod": ("spec",),
}
# Paths that, matched by one pattern, mean the pattern covers all of `sys/`.
_SYS_PROBES = ("sys/policy/root", "sys/seal", "sys/auth/token/tune", "sys/raw/core")
# Endpoints that control the cluster itself (storage, keys, seal, audit): no policy of ours gets sudo there.
_CLUSTER_CONTROL = (
    "sys/raw",
    "sys/seal",
    "sys/step-down",
    "sys/rotate",
    "sys/rekey",
    "sys/generate-root",
    "sys/generate-recovery-token",
    "sys/storage",
    "sys/audit",
    "sys/config/auditing",
    "sys/replication",
    "sys/policy",
    "sys/policies",
)


@dataclass(frozen=True)
class Resource:
    """What a rule sees: type token, name, URN, input properties (engine names) and property dependencies."""

    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    # property name -> URNs of the resources its value came from
    deps: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def unwrap_secrets(value: Any) -> Any:
    """The plain value under Pulumi's secret markers (rules judge settings, not their secrecy)."""
    if isinstance(value, Mapping):
        if _SECRET_SIG in value:
            return unwrap_secrets(value.get("value"))
        return {k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [unwrap_secrets(v) for v in value]
    return value


def _get(mapping: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


# --- Keycloak --------------------------------------------------------------------------------------------


def idp_validates_signature_and_issuer(res: Resource) -> list[str]:
    """An OIDC identity provider must check the upstream's signatures (with its JWKS) and its issuer."""
    if res.type != IDP:
        return []
    p, out = res.props, []
    if not _is_true(p.get("validateSignature")):
        out.append(f"identity provider {res.name}: validateSignature must be true")
    if not p.get("jwksUrl"):
        out.append(f"identity provider {res.name}: jwksUrl must be set to validate signatures")
    if not p.get("issuer"):
        out.append(f"identity provider {res.name}: issuer must be set (Keycloak skips the check otherwise)")
    return out


def idp_keeps_no_tokens_and_trusts_no_email(res: Resource) -> list[str]:
    """Upstream tokens are not stored (the provider's default stores them) and upstream e-mail is not trusted."""
    if res.type != IDP:
        return []
    out = []
    if res.props.get("storeToken") is not False:
        out.append(f"identity provider {res.name}: storeToken must be set to false (the default is true)")
    if _is_true(res.props.get("trustEmail")):
        out.append(f"identity provider {res.name}: trustEmail must be false")
    return out


def idp_uses_pkce(res: Resource) -> list[str]:
    if res.type != IDP:
        return []
    extra = res.props.get("extraConfig") or {}
    if not _is_true(extra.get("pkceEnabled")) or extra.get("pkceMethod") != "S256":
        return [f"identity provider {res.name}: PKCE with S256 must be on (extraConfig pkceEnabled, pkceMethod)"]
    return []


def client_has_no_password_or_implicit_grant(res: Resource) -> list[str]:
    """No client may take passwords (direct access grants) or hand out tokens in URLs (implicit flow)."""
    if res.type != CLIENT:
        return []
    out = []
    if _is_true(res.props.get("directAccessGrantsEnabled")):
        out.append(f"client {res.props.get('clientId', res.name)}: direct access grants must be off")
    if _is_true(res.props.get("implicitFlowEnabled")):
        out.append(f"client {res.props.get('clientId', res.name)}: the implicit flow must be off")
    return out


def client_code_flow_uses_pkce(res: Resource) -> list[str]:
    if res.type != CLIENT or not _is_true(res.props.get("standardFlowEnabled")):
        return []
    if res.props.get("pkceCodeChallengeMethod") != "S256":
        return [f"client {res.props.get('clientId', res.name)}: the code flow needs PKCE S256"]
    return []


def gateway_clients_carry_audience(
    resources: Sequence[Resource],
    *,
    gateway_clients: Iterable[str] = ("antenna-cli", "antenna-portal"),
    audience: str = "antenna-gateway",
) -> list[str]:
    """Every client that obtains gateway tokens gets `aud` = the gateway, through a default scope or its own
    mapper: Keycloak leaves `aud` out unless told, and the gateway refuses such tokens."""
    wanted = set(gateway_clients)

    def adds_audience(mapper: Resource) -> bool:
        p = mapper.props
        return audience in (p.get("includedCustomAudience"), p.get("includedClientAudience")) and (
            p.get("addToAccessToken") is not False
        )

    mappers = [r for r in resources if r.type == AUDIENCE_MAPPER and adds_audience(r)]
    scope_urns_with_audience = {u for m in mappers for u in m.deps.get("clientScopeId", ())}
    scope_names_with_audience = {
        r.props.get("name") for r in resources if r.type == CLIENT_SCOPE and r.urn in scope_urns_with_audience
    }
    out = []
    for client in (r for r in resources if r.type == CLIENT and r.props.get("clientId") in wanted):
        direct = any(client.urn in m.deps.get("clientId", ()) for m in mappers)
        via_scope = any(
            r.type == CLIENT_DEFAULT_SCOPES
            and client.urn in r.deps.get("clientId", ())
            and scope_names_with_audience.intersection(r.props.get("defaultScopes") or [])
            for r in resources
        )
        if not (direct or via_scope):
            out.append(
                f"client {client.props.get('clientId')}: obtains gateway tokens but no default scope or mapper "
                f"adds the audience {audience!r}"
            )
    return out


# --- Vault -----------------------------------------------------------------------------------------------


def vault_policy_grants_no_sudo_or_sys_wildcard(res: Resource) -> list[str]:
    """No policy grants anything over the whole of `sys/` (by `*`, `sys/*`, `+/*`...), nor `sudo` on a
    pattern or on the cluster's own controls (seal, keys, storage, audit, policies).

    `sudo` on one exact root-protected endpoint stays possible: enabling an auth method at `sys/auth/<name>`
    or revoking one role's leases needs it, and an exact path says precisely what is granted.
    """
    if res.type != VAULT_POLICY:
        return []
    name = res.props.get("name", res.name)
    try:
        paths = capabilities_by_path(str(res.props.get("policy") or ""))
    except PolicyParseError as exc:
        return [f"Vault policy {name}: cannot be read ({exc}); refusing what cannot be checked"]
    out = []
    for pattern, capabilities in paths.items():
        if "root" in capabilities:
            out.append(f"Vault policy {name}: path {pattern!r} grants root")
        if "sudo" in capabilities:
            if "*" in pattern or "+" in pattern.split("/"):
                out.append(f"Vault policy {name}: path {pattern!r} grants sudo on a pattern")
            elif any(pattern == c or pattern.startswith(c + "/") for c in _CLUSTER_CONTROL):
                out.append(f"Vault policy {name}: path {pattern!r} grants sudo on the cluster's own controls")
        granted = [c for c in capabilities if c != "deny"]
        if granted and all(pattern_matches(pattern, probe) for probe in _SYS_PROBES):
            out.append(f"Vault policy {name}: path {pattern!r} grants {', '.join(granted)} over all of sys/")
    return out


# --- Kubernetes ------------------------------------------------------------------------------------------


def workload_runs_as_non_root_with_limits(res: Resource) -> list[str]:
    """Every container of a workload runs as a non-root user, unprivileged, with CPU and memory limits."""
    path = _POD_TEMPLATE_PATHS.get(res.type)
    if path is None:
        return []
    pod = _get(res.props, *path)
    if not isinstance(pod, Mapping):
        return [f"{res.type.split(':')[-1]} {res.name}: no pod spec to check"]
    pod_sc = pod.get("securityContext") or {}
    out = []
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
    for container in containers:
        where = f"{res.type.split(':')[-1]} {res.name}, container {container.get('name')}"
        sc = container.get("securityContext") or {}
        user = sc.get("runAsUser", pod_sc.get("runAsUser"))
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if user == 0 or (user is None and not _is_true(non_root)):
            out.append(f"{where}: runs as root (set runAsNonRoot: true or a non-zero runAsUser)")
        if _is_true(sc.get("privileged")):
            out.append(f"{where}: runs privileged")
        limits = _get(container, "resources", "limits") or {}
        missing = [kind for kind in ("cpu", "memory") if not limits.get(kind)]
        if missing:
            out.append(f"{where}: no {' or '.join(missing)} limit")
    return out


ResourceRule = Callable[[Resource], list[str]]
StackRule = Callable[[Sequence[Resource]], list[str]]

RESOURCE_RULES: dict[str, tuple[str, ResourceRule]] = {
    "keycloak-idp-signature-and-issuer": (
        "Keycloak identity providers validate signatures (JWKS) and the issuer",
        idp_validates_signature_and_issuer,
    ),
    "keycloak-idp-no-stored-tokens-no-trusted-email": (
        "Keycloak identity providers store no upstream tokens and trust no upstream e-mail",
        idp_keeps_no_tokens_and_trusts_no_email,
    ),
    "keycloak-idp-pkce": ("Keycloak identity providers use PKCE S256", idp_uses_pkce),
    "keycloak-client-no-password-or-implicit-grant": (
        "Keycloak clients allow neither direct access grants nor the implicit flow",
        client_has_no_password_or_implicit_grant,
    ),
    "keycloak-client-code-flow-pkce": ("Keycloak code-flow clients require PKCE S256", client_code_flow_uses_pkce),
    "vault-policy-no-sudo-no-sys-wildcard": (
        "Vault policies grant nothing over all of sys/, and sudo only on exact, non-cluster-control paths",
        vault_policy_grants_no_sudo_or_sys_wildcard,
    ),
    "kubernetes-workload-non-root-with-limits": (
        "Kubernetes workloads run as non-root, unprivileged, with CPU and memory limits",
        workload_runs_as_non_root_with_limits,
    ),
}
STACK_RULES: dict[str, tuple[str, StackRule]] = {
    "keycloak-gateway-clients-audience": (
        "Clients obtaining gateway tokens add the antenna-gateway audience",
        gateway_clients_carry_audience,
    ),
}


def violations(resources: Sequence[Resource]) -> dict[str, list[str]]:
    """Every rule over every resource: `{rule name: violations}`, rules without violations left out."""
    found: dict[str, list[str]] = {}
    for rule_name, (_description, rule) in RESOURCE_RULES.items():
        messages = [m for r in resources for m in rule(r)]
        if messages:
            found[rule_name] = messages
    for rule_name, (_description, stack_rule) in STACK_RULES.items():
        messages = stack_rule(resources)
        if messages:
            found[rule_name] = messages
    return found

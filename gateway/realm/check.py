"""`antenna realm check`: read the live realm through the admin API and list what differs from the contract.

Reads only. Each check reports in the operator's terms (the setting, what the contract wants, what is there),
so the list is what to fix after a deploy or a manual change in the admin console.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from keycloak import KeycloakAdmin

from gateway.realm.admin import call
from gateway.realm.contract import Difference, RealmContract

_ACCEPTANCE_HOST = "proxy.acc.myaccessid.org"
_CONFIDENTIAL_AUTH = {"client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt"}
_GROUP_MAPPERS = {"oidc-advanced-group-idp-mapper", "oidc-hardcoded-group-idp-mapper"}
_MISSING = "nothing"


def _shown(value: Any) -> str:
    return _MISSING if value is None or value == "" else repr(value)


class _Report:
    def __init__(self) -> None:
        self.differences: list[Difference] = []

    def expect(self, setting: str, actual: Any, expected: Any, *, shown: str | None = None) -> None:
        """Record a difference unless `actual == expected` (Keycloak's string booleans compared as text)."""
        if isinstance(expected, bool) and isinstance(actual, str):
            actual = {"true": True, "false": False}.get(actual.lower(), actual)
        if actual != expected:
            self.add(setting, shown or repr(expected), _shown(actual))

    def add(self, setting: str, expected: str, actual: str) -> None:
        self.differences.append(Difference(setting, expected, actual))


def check_realm(admin: KeycloakAdmin, contract: RealmContract | None = None) -> list[Difference]:
    """Every setting of the live realm that differs from identity-contract.md (empty when compliant).

    `admin` acts on the realm to check (`connect_admin(..., realm=...)`). Raises NotFound if the realm
    does not exist, Forbidden if the admin client may not read it, KeycloakUnavailable if unreachable.
    """
    c = contract or RealmContract()
    report = _Report()
    realm = call(f"realm {c.realm}", admin.get_realm, c.realm)
    _check_realm_settings(report, realm, c)
    idp: dict[str, Any] = call(f"identity provider {c.idp_alias}", admin.get_idp, c.idp_alias, missing={})
    if not idp:
        report.add(f"identity provider {c.idp_alias}", "an OIDC identity provider for MyAccessID", "none")
    else:
        _check_idp(report, idp, c)
        mappers = call(f"mappers of {c.idp_alias}", admin.get_idp_mappers, c.idp_alias)
        _check_mappers(report, mappers, idp, c)
        _check_flows(report, admin, idp, c)
    _check_user_profile(report, call("the user profile", admin.get_realm_users_profile), c)
    roles = {r.get("name") for r in call("realm roles", admin.get_realm_roles)}
    for role in (*c.staff_roles, c.member_role):
        if role not in roles:
            report.add(f"realm role {role}", "present", "missing")
    _check_clients(report, admin, c)
    _check_test_account(report, admin, c)
    return report.differences


def _check_realm_settings(report: _Report, realm: dict[str, Any], c: RealmContract) -> None:
    where = f"realm {c.realm}"
    report.expect(f"{where}: enabled", realm.get("enabled"), True)
    report.expect(f"{where}: registrationAllowed", realm.get("registrationAllowed"), False)
    lifespan = realm.get("accessTokenLifespan")
    if not isinstance(lifespan, int) or lifespan > c.max_access_token_seconds:
        report.add(f"{where}: accessTokenLifespan", f"at most {c.max_access_token_seconds} s", _shown(lifespan))


def _check_idp(report: _Report, idp: dict[str, Any], c: RealmContract) -> None:
    where = f"identity provider {c.idp_alias}"
    config: dict[str, Any] = idp.get("config") or {}
    report.expect(f"{where}: providerId", idp.get("providerId"), "oidc")
    report.expect(f"{where}: enabled", idp.get("enabled"), True)
    issuer = config.get("issuer")
    report.expect(f"{where}: config.issuer", issuer, c.issuer)
    if isinstance(issuer, str) and urlsplit(issuer).hostname == _ACCEPTANCE_HOST and c.issuer != issuer:
        report.add(f"{where}: config.issuer", "never the acceptance instance in production", repr(issuer))
    report.expect(f"{where}: config.validateSignature", config.get("validateSignature"), True)
    report.expect(f"{where}: config.useJwksUrl", config.get("useJwksUrl"), True)
    if not config.get("jwksUrl"):
        report.add(f"{where}: config.jwksUrl", "the upstream's JWKS URL", _MISSING)
    report.expect(f"{where}: config.pkceEnabled", config.get("pkceEnabled"), True)
    report.expect(f"{where}: config.pkceMethod", config.get("pkceMethod"), "S256")
    if config.get("clientAuthMethod") not in _CONFIDENTIAL_AUTH:
        report.add(
            f"{where}: config.clientAuthMethod",
            "a confidential client method (" + ", ".join(sorted(_CONFIDENTIAL_AUTH)) + ")",
            _shown(config.get("clientAuthMethod")),
        )
    secret = config.get("clientSecret")
    if not secret and config.get("clientAuthMethod") != "private_key_jwt":
        report.add(f"{where}: config.clientSecret", "set (confidential client)", _MISSING)
    elif c.require_vault_client_secret and isinstance(secret, str) and not secret.startswith("${vault."):
        # Keycloak masks stored secrets as ****** but shows vault references as they are.
        report.add(f"{where}: config.clientSecret", "a ${vault.<key>} reference", "a secret stored in Keycloak")
    report.expect(f"{where}: config.syncMode", config.get("syncMode"), "FORCE")
    report.expect(f"{where}: storeToken", idp.get("storeToken"), False)
    report.expect(f"{where}: trustEmail", idp.get("trustEmail"), False)
    report.expect(f"{where}: linkOnly", idp.get("linkOnly"), False)
    report.expect(f"{where}: addReadTokenRoleOnCreate", idp.get("addReadTokenRoleOnCreate", False), False)


def _check_mappers(report: _Report, mappers: list[dict[str, Any]], idp: dict[str, Any], c: RealmContract) -> None:
    where = f"identity provider {c.idp_alias}"
    idp_force = (idp.get("config") or {}).get("syncMode") == "FORCE"

    def forced(mapper: dict[str, Any]) -> bool:
        mode = (mapper.get("config") or {}).get("syncMode", "INHERIT")
        return bool(mode == "FORCE" or (mode == "INHERIT" and idp_force))

    usernames = [m for m in mappers if m.get("identityProviderMapper") == "oidc-username-idp-mapper"]
    if not any((m.get("config") or {}).get("template") == "${CLAIM.sub}" for m in usernames):
        report.add(f"{where}: username mapper", "template ${CLAIM.sub}", _shown([m.get("name") for m in usernames]))
    importers = {
        (m.get("config") or {}).get("user.attribute"): m
        for m in mappers
        if m.get("identityProviderMapper") == "oidc-user-attribute-idp-mapper"
    }
    for attribute, claim in c.imported_attributes:
        mapper = importers.get(attribute)
        if mapper is None:
            report.add(f"{where}: attribute importer {attribute}", f"imports claim {claim!r}", "none")
            continue
        report.expect(
            f"{where}: attribute importer {attribute}: claim", (mapper.get("config") or {}).get("claim"), claim
        )
        if not forced(mapper):
            mode = (mapper.get("config") or {}).get("syncMode")
            report.add(f"{where}: attribute importer {attribute}: syncMode", "FORCE", _shown(mode))
    for mapper in mappers:
        if mapper.get("identityProviderMapper") not in _GROUP_MAPPERS:
            continue
        group = (mapper.get("config") or {}).get("group", "")
        name = f"{where}: group mapper {mapper.get('name')}"
        if not str(group).startswith(c.projects_group + "/"):
            report.add(f"{name}: group", f"a group under {c.projects_group}/", _shown(group))
        if not forced(mapper):
            # Without FORCE a person keeps the group after the entitlement is gone.
            report.add(f"{name}: syncMode", "FORCE", _shown((mapper.get("config") or {}).get("syncMode")))


def _executions(admin: KeycloakAdmin, alias: str) -> list[dict[str, Any]]:
    return call(f"authentication flow {alias}", admin.get_authentication_flow_executions, alias)


def _check_flows(report: _Report, admin: KeycloakAdmin, idp: dict[str, Any], c: RealmContract) -> None:
    where = f"identity provider {c.idp_alias}"
    first = idp.get("firstBrokerLoginFlowAlias")
    if not first:
        report.add(f"{where}: firstBrokerLoginFlowAlias", "a flow that creates users if unique", _MISSING)
    else:
        steps = [s for s in _executions(admin, first) if s.get("requirement") != "DISABLED"]
        providers = {str(s.get("providerId")) for s in steps}
        for linking in sorted(providers & c.linking_authenticators):
            report.add(f"first broker login flow {first!r}", f"no {linking} (links accounts by e-mail)", linking)
        if "idp-create-user-if-unique" not in providers:
            report.add(f"first broker login flow {first!r}", "idp-create-user-if-unique", "absent")
    post = idp.get("postBrokerLoginFlowAlias")
    if not post:
        report.add(f"{where}: postBrokerLoginFlowAlias", "a flow refusing people in no project", _MISSING)
        return
    steps = [s for s in _executions(admin, post) if s.get("requirement") != "DISABLED"]
    deny = any(s.get("providerId") == "deny-access-authenticator" for s in steps)
    conditions = [s for s in steps if s.get("providerId") == "conditional-user-role"]
    refuses_non_members = False
    for condition in conditions:
        config_id = condition.get("authenticationConfig")
        if not config_id:
            continue
        config = call("an authenticator configuration", admin.get_authenticator_config, config_id).get("config", {})
        if config.get("condUserRole") == c.member_role and str(config.get("negate")).lower() == "true":
            refuses_non_members = True
    if not (deny and refuses_non_members):
        report.add(
            f"post broker login flow {post!r}",
            f"deny access to users without the role {c.member_role}",
            "no such refusal",
        )


def _check_user_profile(report: _Report, profile: dict[str, Any], c: RealmContract) -> None:
    declared = {a.get("name"): a for a in profile.get("attributes") or []}
    for name, _claim in c.imported_attributes:
        attribute = declared.get(name)
        if attribute is None:
            report.add(f"user profile attribute {name}", "declared, editable by admins only", "undeclared")
            continue
        permissions = attribute.get("permissions") or {}
        if set(permissions.get("edit") or []) - {"admin"}:
            report.add(f"user profile attribute {name}: edit", "['admin']", repr(permissions.get("edit")))


def _client_mappers(client: dict[str, Any], scopes: dict[str, dict[str, Any]]) -> Iterable[dict[str, Any]]:
    yield from client.get("protocolMappers") or []
    for name in client.get("defaultClientScopes") or []:
        yield from scopes.get(name, {}).get("protocolMappers") or []


def _check_clients(report: _Report, admin: KeycloakAdmin, c: RealmContract) -> None:
    clients = {cl.get("clientId"): cl for cl in call("clients", admin.get_clients)}
    scopes = {s.get("name"): s for s in call("client scopes", admin.get_client_scopes)}
    for client_id, client in clients.items():
        # No client at all may take passwords or put tokens in URLs.
        if client.get("directAccessGrantsEnabled"):
            report.add(f"client {client_id}: directAccessGrantsEnabled", "False", "True")
        if client.get("implicitFlowEnabled"):
            report.add(f"client {client_id}: implicitFlowEnabled", "False", "True")
    for client_id in (*c.gateway_clients, c.grafana_client):
        client = clients.get(client_id)
        if client is None:
            report.add(f"client {client_id}", "present", "missing")
            continue
        attrs: dict[str, Any] = client.get("attributes") or {}
        where = f"client {client_id}"
        report.expect(f"{where}: fullScopeAllowed", client.get("fullScopeAllowed"), False)
        if client_id == c.cli_client:
            report.expect(f"{where}: publicClient", client.get("publicClient"), True)
            report.expect(f"{where}: standardFlowEnabled", client.get("standardFlowEnabled"), False)
            report.expect(f"{where}: serviceAccountsEnabled", client.get("serviceAccountsEnabled"), False)
            report.expect(
                f"{where}: oauth2.device.authorization.grant.enabled",
                attrs.get("oauth2.device.authorization.grant.enabled"),
                True,
            )
        else:
            report.expect(f"{where}: publicClient", client.get("publicClient"), False)
            report.expect(f"{where}: pkce.code.challenge.method", attrs.get("pkce.code.challenge.method"), "S256")
        if client_id not in c.gateway_clients:
            continue
        report.expect(f"{where}: access.token.header.type.rfc9068", attrs.get("access.token.header.type.rfc9068"), True)
        lifespan = str(attrs.get("access.token.lifespan") or "")
        if lifespan not in ("", "-1") and (not lifespan.isdigit() or int(lifespan) > c.max_access_token_seconds):
            report.add(f"{where}: access.token.lifespan", f"at most {c.max_access_token_seconds} s", lifespan)
        mappers = list(_client_mappers(client, scopes))
        if not any(_adds_audience(m, c.audience) for m in mappers):
            report.add(f"{where}: audience", f"{c.audience!r} added to access tokens", "no audience mapper")
        if not any(
            m.get("protocolMapper") == "oidc-group-membership-mapper"
            and (m.get("config") or {}).get("full.path") == "true"
            and (m.get("config") or {}).get("access.token.claim") == "true"
            for m in mappers
        ):
            report.add(f"{where}: groups claim", "full group paths in access tokens", "no group mapper")
        # With full scope off, only roles mapped to the client's scope reach its tokens.
        mapped = {
            r.get("name") for r in call(f"scope of {client_id}", admin.get_realm_roles_of_client_scope, client["id"])
        }
        for role in c.staff_roles:
            if role not in mapped:
                report.add(f"{where}: scope mapping {role}", "mapped (else it never reaches tokens)", "not mapped")


def _adds_audience(mapper: dict[str, Any], audience: str) -> bool:
    config = mapper.get("config") or {}
    return (
        mapper.get("protocolMapper") == "oidc-audience-mapper"
        and audience in (config.get("included.custom.audience"), config.get("included.client.audience"))
        and config.get("access.token.claim") == "true"
    )


def _check_test_account(report: _Report, admin: KeycloakAdmin, c: RealmContract) -> None:
    users = call("users", admin.get_users, {"username": c.test_account, "exact": True})
    for user in users:
        groups = call(f"groups of {c.test_account}", admin.get_user_groups, user["id"])
        projects = sorted(
            g.get("path", "") for g in groups if str(g.get("path", "")).startswith(c.projects_group + "/")
        )
        if projects:
            report.add(f"user {c.test_account}", "in no project (MyAccessID's test account)", ", ".join(projects))

"""The Keycloak realm `antenna`: federation with MyAccessID, project groups, clients and roles.

Every setting identity-contract.md names is set explicitly here, because several of the provider's
defaults are unsafe (no signature validation, stored upstream tokens, no PKCE).
"""

from __future__ import annotations

import json

import pulumi
import pulumi_keycloak as keycloak

from antenna_infra.config import Identity as IdentityConfig
from antenna_infra.config import duration_seconds

IDP_ALIAS = "myaccessid"
FIRST_BROKER_FLOW = "antenna-first-broker-login"
POST_BROKER_FLOW = "antenna-post-broker-login"
CLI_CLIENT = "antenna-cli"
PORTAL_CLIENT = "antenna-portal"
GRAFANA_CLIENT = "antenna-grafana"
GATEWAY_SCOPE = "antenna-gateway"
QUOTA_ADMIN_ROLE = "antenna-quota-admin"
OPERATOR_ROLE = "antenna-operator"
# Held through the /projects group (and by staff roles): the post-broker-login flow refuses anyone without it.
MEMBER_ROLE = "antenna-member"
PROJECTS_GROUP = "projects"
# User attributes imported from MyAccessID; only administrators may see or change them.
IMPORTED_ATTRIBUTES = {
    "sub": "myaccessid_cuid",
    "eduperson_entitlement": "eduperson_entitlement",
    "eduperson_assurance": "eduperson_assurance",
}
_BASE_SCOPES = ["basic", "acr", "roles", "profile", "email"]
_RFC9068 = {"access.token.header.type.rfc9068": "true"}


def entitlement_regex(namespaces: list[str], project: str, *, pi: bool) -> str:
    """Java regex (Keycloak matches the whole value) for an AARC-G069 entitlement naming the project.

    A subgroup or a role in the project implies membership; the deprecated `#authority` suffix is ignored.
    """
    ns = "|".join(f"\\Q{n}\\E" for n in namespaces)
    if pi:
        return f"(?:{ns}):group:projects:\\Q{project}\\E:role=pi(?:#.*)?"
    return f"(?:{ns}):group:projects:\\Q{project}\\E(?::[^#]*)?(?:#.*)?"


class Identity(pulumi.ComponentResource):
    """Realm, MyAccessID identity provider and its mappers, login flows, groups, roles and clients."""

    realm: keycloak.Realm
    identity_provider: keycloak.oidc.IdentityProvider
    clients: dict[str, keycloak.openid.Client]

    def __init__(
        self,
        name: str,
        config: IdentityConfig,
        client_secret: pulumi.Input[str] | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("antenna:index:Identity", name, None, opts)
        self._name = name
        self._config = config
        child = pulumi.ResourceOptions(parent=self)
        lt = config.lifetimes

        self.realm = keycloak.Realm(
            f"{name}-realm",
            realm=config.realm,
            display_name=config.display_name,
            enabled=True,
            ssl_required="external",
            # Only MyAccessID signs people in: no local registration, passwords or e-mail logins.
            registration_allowed=False,
            reset_password_allowed=False,
            remember_me=False,
            verify_email=False,
            edit_username_allowed=False,
            # Usernames are MyAccessID identifiers; e-mail is not an identity here, so it need not be unique.
            login_with_email_allowed=False,
            duplicate_emails_allowed=True,
            access_token_lifespan=lt.access_token,
            sso_session_idle_timeout=lt.sso_session_idle,
            sso_session_max_lifespan=lt.sso_session_max,
            offline_session_idle_timeout=lt.offline_session_idle,
            offline_session_max_lifespan_enabled=True,
            offline_session_max_lifespan=lt.offline_session_max,
            oauth2_device_code_lifespan=lt.device_code,
            oauth2_device_polling_interval=5,
            revoke_refresh_token=True,
            refresh_token_max_reuse=0,
            default_signature_algorithm="RS256",
            opts=child,
        )
        realm_id = self.realm.id

        self._user_profile(realm_id, child)
        roles = self._roles(realm_id, child)
        groups = self._groups(realm_id, roles[MEMBER_ROLE], child)
        first_flow, post_flow = self._flows(realm_id, child)

        m = config.myaccessid
        secret: pulumi.Input[str]
        if m.client_secret_vault_ref is not None:
            secret = m.client_secret_vault_ref
        elif client_secret is not None:
            secret = pulumi.Output.secret(client_secret)
        else:
            raise ValueError("the MyAccessID client secret is neither a Pulumi secret nor a vault reference")

        self.identity_provider = keycloak.oidc.IdentityProvider(
            f"{name}-{IDP_ALIAS}",
            realm=realm_id,
            alias=IDP_ALIAS,
            display_name="MyAccessID",
            provider_id="oidc",
            enabled=True,
            issuer=m.issuer,
            validate_signature=True,
            jwks_url=m.jwks_url,
            authorization_url=m.authorization_url,
            token_url=m.token_url,
            user_info_url=m.userinfo_url,
            # Assurance may arrive only from userinfo.
            disable_user_info=False,
            client_id=m.client_id,
            client_secret=secret,
            default_scopes=m.scopes,
            sync_mode="FORCE",
            store_token=False,
            add_read_token_role_on_create=False,
            trust_email=False,
            link_only=False,
            hide_on_login_page=False,
            accepts_prompt_none_forward_from_client=False,
            backchannel_supported=False,
            first_broker_login_flow_alias=first_flow.alias,
            post_broker_login_flow_alias=post_flow.alias,
            extra_config={
                "pkceEnabled": "true",
                "pkceMethod": "S256",
                "clientAuthMethod": m.client_auth_method,
            },
            opts=child,
        )
        self._idp_mappers(groups, child)
        self.clients = self._clients(realm_id, roles, child)

        self.register_outputs(
            {
                "realm": self.realm.realm,
                "issuer": config.issuer,
                "identity_provider": self.identity_provider.alias,
                "clients": {key: client.client_id for key, client in self.clients.items()},
            }
        )

    def _user_profile(self, realm_id: pulumi.Input[str], child: pulumi.ResourceOptions) -> None:
        args = keycloak.RealmUserProfileAttributeArgs
        perms = keycloak.RealmUserProfileAttributePermissionsArgs
        validator = keycloak.RealmUserProfileAttributeValidatorArgs
        synced = perms(views=["admin", "user"], edits=["admin"])
        attributes = [
            args(
                name="username",
                display_name="${username}",
                permissions=synced,
                validators=[
                    validator(name="length", config={"min": "3", "max": "255"}),
                    validator(name="username-prohibited-characters", config={}),
                    validator(name="up-username-not-idn-homograph", config={}),
                ],
            ),
            args(
                name="email",
                display_name="${email}",
                permissions=synced,
                validators=[
                    validator(name="email", config={}),
                    validator(name="length", config={"max": "255"}),
                ],
            ),
            args(name="firstName", display_name="${firstName}", permissions=synced),
            args(name="lastName", display_name="${lastName}", permissions=synced),
        ]
        attributes += [
            args(
                name=attribute,
                display_name=attribute,
                multi_valued=attribute != "myaccessid_cuid",
                permissions=perms(views=["admin"], edits=["admin"]),
            )
            for attribute in IMPORTED_ATTRIBUTES.values()
        ]
        # No unmanaged_attribute_policy: attributes not declared above are refused.
        keycloak.RealmUserProfile(f"{self._name}-user-profile", realm_id=realm_id, attributes=attributes, opts=child)

    def _roles(self, realm_id: pulumi.Input[str], child: pulumi.ResourceOptions) -> dict[str, keycloak.Role]:
        member = keycloak.Role(
            f"{self._name}-role-{MEMBER_ROLE}",
            realm_id=realm_id,
            name=MEMBER_ROLE,
            description="May sign in: held through a project group or a staff role",
            opts=child,
        )
        roles = {MEMBER_ROLE: member}
        for role, description in (
            (QUOTA_ADMIN_ROLE, "Grants, changes and ends allocations; reads usage reports"),
            (OPERATOR_ROLE, "Runs the Antenna: maps people to site accounts, rotates secrets"),
        ):
            roles[role] = keycloak.Role(
                f"{self._name}-role-{role}",
                realm_id=realm_id,
                name=role,
                description=description,
                composite_roles=[member.id],
                opts=child,
            )
        return roles

    def _groups(
        self, realm_id: pulumi.Input[str], member: keycloak.Role, child: pulumi.ResourceOptions
    ) -> dict[str, tuple[keycloak.Group, keycloak.Group]]:
        top = keycloak.Group(f"{self._name}-group-projects", realm_id=realm_id, name=PROJECTS_GROUP, opts=child)
        # Subgroups inherit the role: every project member may sign in.
        keycloak.GroupRoles(
            f"{self._name}-group-projects-roles",
            realm_id=realm_id,
            group_id=top.id,
            role_ids=[member.id],
            exhaustive=True,
            opts=child,
        )
        groups = {}
        for project in self._config.projects:
            group = keycloak.Group(
                f"{self._name}-group-{project.name}",
                realm_id=realm_id,
                name=project.name,
                parent_id=top.id,
                opts=child,
            )
            pi = keycloak.Group(
                f"{self._name}-group-{project.name}-pi",
                realm_id=realm_id,
                name="pi",
                parent_id=group.id,
                opts=child,
            )
            groups[project.name] = (group, pi)
        return groups

    def _flows(
        self, realm_id: pulumi.Input[str], child: pulumi.ResourceOptions
    ) -> tuple[keycloak.authentication.Flow, keycloak.authentication.Flow]:
        auth = keycloak.authentication
        # Create the user if no account has this username, and fail otherwise: no execution here links an
        # existing account (idp-auto-link, e-mail verification), the known account-takeover path.
        first = auth.Flow(
            f"{self._name}-flow-first-broker-login",
            realm_id=realm_id,
            alias=FIRST_BROKER_FLOW,
            description="Create the user if unique; never link an existing account",
            provider_id="basic-flow",
            opts=child,
        )
        create = auth.Execution(
            f"{self._name}-flow-first-broker-login-create",
            realm_id=realm_id,
            parent_flow_alias=first.alias,
            authenticator="idp-create-user-if-unique",
            requirement="REQUIRED",
            priority=10,
            opts=child,
        )
        # After every brokered login (mappers have run): refuse people who hold no project.
        post = auth.Flow(
            f"{self._name}-flow-post-broker-login",
            realm_id=realm_id,
            alias=POST_BROKER_FLOW,
            description="Refuse people who are in no project",
            provider_id="basic-flow",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[create]),
        )
        no_project = auth.Subflow(
            f"{self._name}-flow-post-broker-login-no-project",
            realm_id=realm_id,
            parent_flow_alias=post.alias,
            alias=f"{POST_BROKER_FLOW}-no-project",
            provider_id="basic-flow",
            requirement="CONDITIONAL",
            priority=10,
            opts=child,
        )
        condition = auth.Execution(
            f"{self._name}-flow-post-broker-login-condition",
            realm_id=realm_id,
            parent_flow_alias=no_project.alias,
            authenticator="conditional-user-role",
            requirement="REQUIRED",
            priority=10,
            opts=child,
        )
        auth.ExecutionConfig(
            f"{self._name}-flow-post-broker-login-condition-config",
            realm_id=realm_id,
            execution_id=condition.id,
            alias="antenna-not-a-member",
            config={"condUserRole": MEMBER_ROLE, "negate": "true"},
            opts=child,
        )
        auth.Execution(
            f"{self._name}-flow-post-broker-login-deny",
            realm_id=realm_id,
            parent_flow_alias=no_project.alias,
            authenticator="deny-access-authenticator",
            requirement="REQUIRED",
            priority=20,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[condition]),
        )
        return first, post

    def _idp_mappers(
        self,
        groups: dict[str, tuple[keycloak.Group, keycloak.Group]],
        child: pulumi.ResourceOptions,
    ) -> None:
        realm = self.realm.id
        alias = self.identity_provider.alias
        force = {"syncMode": "FORCE"}
        keycloak.UserTemplateImporterIdentityProviderMapper(
            f"{self._name}-mapper-username",
            realm=realm,
            identity_provider_alias=alias,
            name="username from sub",
            template="${CLAIM.sub}",
            extra_config=force,
            opts=child,
        )
        for claim, attribute in IMPORTED_ATTRIBUTES.items():
            keycloak.AttributeImporterIdentityProviderMapper(
                f"{self._name}-mapper-{attribute}",
                realm=realm,
                identity_provider_alias=alias,
                name=f"{claim} to {attribute}",
                claim_name=claim,
                user_attribute=attribute,
                extra_config=force,
                opts=child,
            )
        namespaces = self._config.myaccessid.entitlement_namespaces
        for project in self._config.projects:
            if project.membership != "entitlement":
                continue
            for pi in (False, True):
                path = f"/{PROJECTS_GROUP}/{project.name}" + ("/pi" if pi else "")
                claims = [{"key": "eduperson_entitlement", "value": entitlement_regex(namespaces, project.name, pi=pi)}]
                keycloak.CustomIdentityProviderMapping(
                    f"{self._name}-mapper-{project.name}" + ("-pi" if pi else ""),
                    realm=realm,
                    identity_provider_alias=alias,
                    name=f"entitlement to {path}",
                    identity_provider_mapper="oidc-advanced-group-idp-mapper",
                    extra_config={
                        "claims": json.dumps(claims),
                        "are.claim.values.regex": "true",
                        "group": path,
                        # FORCE: the user leaves the group when the entitlement disappears.
                        "syncMode": "FORCE",
                    },
                    opts=pulumi.ResourceOptions(parent=self, depends_on=list(groups[project.name])),
                )

    def _clients(
        self,
        realm_id: pulumi.Input[str],
        roles: dict[str, keycloak.Role],
        child: pulumi.ResourceOptions,
    ) -> dict[str, keycloak.openid.Client]:
        config = self._config
        openid = keycloak.openid
        scope = openid.ClientScope(
            f"{self._name}-scope-gateway",
            realm_id=realm_id,
            name=GATEWAY_SCOPE,
            description="Claims the Antenna gateway needs: audience, groups, MyAccessID identifier",
            include_in_token_scope=True,
            opts=child,
        )
        scoped = pulumi.ResourceOptions(parent=self)
        # Keycloak leaves `aud` out unless told; the gateway refuses tokens without its audience.
        openid.AudienceProtocolMapper(
            f"{self._name}-scope-gateway-audience",
            realm_id=realm_id,
            client_scope_id=scope.id,
            name="audience antenna-gateway",
            included_custom_audience=config.audience,
            add_to_access_token=True,
            add_to_id_token=False,
            opts=scoped,
        )
        openid.GroupMembershipProtocolMapper(
            f"{self._name}-scope-gateway-groups",
            realm_id=realm_id,
            client_scope_id=scope.id,
            name="groups",
            claim_name="groups",
            full_path=True,
            add_to_access_token=True,
            add_to_id_token=False,
            add_to_userinfo=True,
            opts=scoped,
        )
        openid.UserAttributeProtocolMapper(
            f"{self._name}-scope-gateway-cuid",
            realm_id=realm_id,
            client_scope_id=scope.id,
            name="myaccessid_cuid",
            user_attribute="myaccessid_cuid",
            claim_name="myaccessid_cuid",
            add_to_access_token=True,
            add_to_id_token=False,
            add_to_userinfo=True,
            opts=scoped,
        )
        openid.UserAttributeProtocolMapper(
            f"{self._name}-scope-gateway-entitlements",
            realm_id=realm_id,
            client_scope_id=scope.id,
            name="eduperson_entitlement",
            user_attribute="eduperson_entitlement",
            claim_name="eduperson_entitlement",
            multivalued=True,
            add_to_access_token=True,
            add_to_id_token=False,
            add_to_userinfo=True,
            opts=scoped,
        )

        device_seconds = duration_seconds(config.lifetimes.device_code)
        # Every flag is explicit on every client: the provider's defaults are not a contract.
        cli = openid.Client(
            f"{self._name}-client-{CLI_CLIENT}",
            realm_id=realm_id,
            client_id=CLI_CLIENT,
            name="Antenna command line",
            enabled=True,
            access_type="PUBLIC",
            standard_flow_enabled=False,
            implicit_flow_enabled=False,
            direct_access_grants_enabled=False,
            service_accounts_enabled=False,
            oauth2_device_authorization_grant_enabled=True,
            oauth2_device_code_lifespan=str(device_seconds),
            oauth2_device_polling_interval="5",
            consent_required=False,
            full_scope_allowed=False,
            frontchannel_logout_enabled=False,
            extra_config=_RFC9068,
            opts=child,
        )
        portal = openid.Client(
            f"{self._name}-client-{PORTAL_CLIENT}",
            realm_id=realm_id,
            client_id=PORTAL_CLIENT,
            name="Antenna portal",
            enabled=True,
            access_type="CONFIDENTIAL",
            standard_flow_enabled=True,
            pkce_code_challenge_method="S256",
            implicit_flow_enabled=False,
            direct_access_grants_enabled=False,
            service_accounts_enabled=False,
            oauth2_device_authorization_grant_enabled=False,
            consent_required=False,
            full_scope_allowed=False,
            frontchannel_logout_enabled=False,
            valid_redirect_uris=config.portal_redirect_uris,
            web_origins=config.portal_web_origins,
            extra_config=_RFC9068,
            opts=child,
        )
        grafana_root = config.grafana_root_url
        grafana = openid.Client(
            f"{self._name}-client-{GRAFANA_CLIENT}",
            realm_id=realm_id,
            client_id=GRAFANA_CLIENT,
            name="Antenna Grafana",
            enabled=True,
            access_type="CONFIDENTIAL",
            standard_flow_enabled=True,
            pkce_code_challenge_method="S256",
            implicit_flow_enabled=False,
            direct_access_grants_enabled=False,
            service_accounts_enabled=False,
            oauth2_device_authorization_grant_enabled=False,
            consent_required=False,
            full_scope_allowed=False,
            frontchannel_logout_enabled=False,
            root_url=grafana_root,
            valid_redirect_uris=[f"{grafana_root}/login/generic_oauth"] if grafana_root else [],
            web_origins=[grafana_root] if grafana_root else [],
            extra_config=_RFC9068,
            opts=child,
        )
        clients = {CLI_CLIENT: cli, PORTAL_CLIENT: portal, GRAFANA_CLIENT: grafana}
        # Keycloak creates `admin-cli` in every realm with the password grant on: take it over, turn that off.
        openid.Client(
            f"{self._name}-client-admin-cli",
            realm_id=realm_id,
            client_id="admin-cli",
            import_=True,
            name="${client_admin-cli}",
            enabled=True,
            access_type="PUBLIC",
            standard_flow_enabled=False,
            implicit_flow_enabled=False,
            direct_access_grants_enabled=False,
            service_accounts_enabled=False,
            oauth2_device_authorization_grant_enabled=False,
            opts=child,
        )

        # Full scope is off, so a token carries only the realm roles mapped to its client here.
        gateway_roles = [QUOTA_ADMIN_ROLE, OPERATOR_ROLE]
        scope_roles = {CLI_CLIENT: gateway_roles, PORTAL_CLIENT: gateway_roles, GRAFANA_CLIENT: [OPERATOR_ROLE]}
        for key, client in clients.items():
            gateway_tokens = key != GRAFANA_CLIENT
            default_scopes: list[pulumi.Input[str]] = list(_BASE_SCOPES)
            if gateway_tokens:
                default_scopes.append(scope.name)
            openid.ClientDefaultScopes(
                f"{self._name}-client-{key}-default-scopes",
                realm_id=realm_id,
                client_id=client.id,
                default_scopes=default_scopes,
                opts=child,
            )
            # No optional scopes: nobody asks for offline_access or extra claims.
            openid.ClientOptionalScopes(
                f"{self._name}-client-{key}-optional-scopes",
                realm_id=realm_id,
                client_id=client.id,
                optional_scopes=[],
                opts=child,
            )
            for role in scope_roles[key]:
                keycloak.GenericRoleMapper(
                    f"{self._name}-client-{key}-scope-{role}",
                    realm_id=realm_id,
                    client_id=client.id,
                    role_id=roles[role].id,
                    opts=child,
                )
        return clients

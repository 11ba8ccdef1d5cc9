"""Typed stack configuration: the `antenna:*` keys of `Pulumi.<stack>.yaml`, validated before anything is built.

Secrets are never fields here: they are read as Pulumi secrets (`pulumi config set --secret`) or referenced
in Vault, see `StackSecrets`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import pulumi
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_NAME = r"^[a-z][a-z0-9-]{0,62}$"
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_ACCEPTANCE_HOST = "proxy.acc.myaccessid.org"
# Keycloak's files/keystore vault providers resolve `${vault.<key>}` at run time.
_KEYCLOAK_VAULT_REF = re.compile(r"^\$\{vault\.[A-Za-z0-9_.-]+\}$")


class InfraConfigError(ValueError):
    """The stack configuration is invalid; nothing is deployed."""


def duration_seconds(value: str) -> int:
    """Seconds in a Go-style duration as the Keycloak provider takes it (`5m`, `10h`, `1h30m`)."""
    match = _DURATION.match(value)
    if not value or match is None:
        raise ValueError(f"{value!r} is not a duration like 5m, 10h or 1h30m")
    hours, minutes, seconds = (int(part) if part else 0 for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _https(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.netloc:
        raise ValueError(f"{value!r} must be an absolute https:// URL")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MyAccessID(_Model):
    """The upstream OIDC provider. Defaults are MyAccessID production; dev stacks use the acceptance instance."""

    issuer: str = "https://proxy.myaccessid.org"
    authorization_url: str = "https://proxy.myaccessid.org/OIDC/authorization"
    token_url: str = "https://proxy.myaccessid.org/OIDC/token"  # noqa: S105 - a URL
    userinfo_url: str = "https://proxy.myaccessid.org/OIDC/userinfo"
    jwks_url: str = "https://proxy.myaccessid.org/OIDC/jwks"
    client_id: str = Field(min_length=1)
    client_auth_method: Literal["client_secret_basic", "client_secret_post", "client_secret_jwt"] = (
        "client_secret_basic"
    )
    # When set, Keycloak reads the secret from its vault provider and no secret passes through Pulumi.
    client_secret_vault_ref: str | None = None
    scopes: str = "openid profile email eduperson_entitlement"
    entitlement_namespaces: list[str] = Field(default_factory=lambda: ["urn:geant:antenna.be"], min_length=1)

    @field_validator("issuer", "authorization_url", "token_url", "userinfo_url", "jwks_url")
    @classmethod
    def _is_https(cls, value: str) -> str:
        return _https(value)

    @field_validator("client_secret_vault_ref")
    @classmethod
    def _is_vault_ref(cls, value: str | None) -> str | None:
        if value is not None and not _KEYCLOAK_VAULT_REF.match(value):
            raise ValueError("must be a Keycloak vault reference like ${vault.myaccessid_client_secret}")
        return value

    @field_validator("entitlement_namespaces")
    @classmethod
    def _namespaces(cls, value: list[str]) -> list[str]:
        for ns in value:
            if not ns.startswith("urn:") or "\\E" in ns:
                raise ValueError(f"{ns!r} is not a URN namespace")
        return value

    @property
    def is_acceptance(self) -> bool:
        return urlsplit(self.issuer).hostname == _ACCEPTANCE_HOST


class Project(_Model):
    name: str = Field(pattern=_NAME)
    # `entitlement`: MyAccessID entitlements decide membership (FORCE sync adds and removes);
    # `local`: operators decide with `antenna project add-member/remove-member`.
    membership: Literal["entitlement", "local"] = "entitlement"


class TokenLifetimes(_Model):
    access_token: str = "5m"  # noqa: S105 - a lifetime
    sso_session_idle: str = "30m"
    sso_session_max: str = "10h"
    offline_session_idle: str = "720h"
    offline_session_max: str = "2160h"
    device_code: str = "10m"

    @field_validator("*")
    @classmethod
    def _duration(cls, value: str) -> str:
        duration_seconds(value)
        return value

    @model_validator(mode="after")
    def _short_access_tokens(self) -> TokenLifetimes:
        # The gateway refuses tokens living longer than its cap (1 h by default).
        if duration_seconds(self.access_token) > 3600:
            raise ValueError("access_token: at most 1h (the gateway refuses longer-lived tokens)")
        return self


class Identity(_Model):
    keycloak_url: str
    realm: str = "antenna"
    display_name: str = "Belgian AI Factory Antenna"
    audience: str = "antenna-gateway"
    myaccessid: MyAccessID
    projects: list[Project] = Field(default_factory=list)
    portal_redirect_uris: list[str] = Field(default_factory=list)
    portal_web_origins: list[str] = Field(default_factory=list)
    grafana_root_url: str | None = None
    lifetimes: TokenLifetimes = Field(default_factory=TokenLifetimes)

    @field_validator("keycloak_url")
    @classmethod
    def _keycloak_https(cls, value: str) -> str:
        return _https(value).rstrip("/")

    @field_validator("projects")
    @classmethod
    def _unique_projects(cls, value: list[Project]) -> list[Project]:
        names = [p.name for p in value]
        if len(names) != len(set(names)):
            raise ValueError("project names must be unique")
        return value

    @property
    def issuer(self) -> str:
        """The realm's issuer: what the gateway's `oidc.issuer` must equal exactly."""
        return f"{self.keycloak_url}/realms/{self.realm}"


class Database(_Model):
    host: str
    port: int = Field(default=5432, ge=1, le=65535)
    name: str = "antenna"
    admin_username: str = "vault_admin"
    # The gateway's dynamic users are created IN this group role, which owns the schema.
    app_role: str = Field(default="antenna_app", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    sslmode: Literal["disable", "require", "verify-ca", "verify-full"] = "verify-full"
    credential_ttl_seconds: int = Field(default=3600, ge=300)
    credential_max_ttl_seconds: int = Field(default=86400, ge=300)


class Secrets(_Model):
    kv_mount: str = "antenna"
    ssh_mount: str = "ssh-client-signer"
    database_mount: str = "database"
    approle_path: str = "approle"
    # Directory of `*.hcl` Vault policies, relative to the repository root.
    policies_dir: str = "policies/vault"
    gateway_role: str = "antenna-gateway"
    gateway_policies: list[str] = Field(default_factory=lambda: ["antenna-gateway"], min_length=1)
    # Periodic tokens renewed while the gateway lives; secret-ids work once, shortly after issue.
    token_period_seconds: int = Field(default=3600, ge=60)
    secret_id_ttl_seconds: int = Field(default=600, ge=60)
    secret_id_bound_cidrs: list[str] = Field(default_factory=list)
    # One SSH signing role per site with the ssh connector, named after the site; which accounts each may
    # sign for is kept by `antenna vault sync-accounts`, not here.
    ssh_sites: list[str] = Field(default_factory=list)
    ssh_cert_ttl_seconds: int = Field(default=600, ge=60)
    ssh_cert_max_ttl_seconds: int = Field(default=1800, ge=60)
    database: Database | None = None
    # Vault's Kubernetes auth for the gateway's pods (address of the cluster's API server).
    kubernetes_host: str | None = None


class Resources(_Model):
    cpu_request: str = "250m"
    memory_request: str = "256Mi"
    cpu_limit: str = "1"
    memory_limit: str = "512Mi"


class Gateway(_Model):
    namespace: str = Field(default="antenna", pattern=_NAME)
    image: str
    replicas: int = Field(default=2, ge=2)
    max_replicas: int = Field(default=6, ge=2)
    port: int = Field(default=8000, ge=1024, le=65535)
    public_url: str
    vault_address: str
    database_url: str
    redis_url: str | None = None
    resources: Resources = Field(default_factory=Resources)
    ingress_namespaces: list[str] = Field(default_factory=lambda: ["ingress-nginx"])
    monitoring_namespaces: list[str] = Field(default_factory=lambda: ["monitoring"])
    # Merged over the generated configuration file (sites, limits, ...). Never secrets: the gateway refuses them.
    settings: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _bounds(self) -> Gateway:
        if self.max_replicas < self.replicas:
            raise ValueError("max_replicas must be at least replicas")
        if urlsplit(self.database_url).password is not None:
            raise ValueError("database_url: no password here; the gateway gets credentials from Vault")
        return self


class Monitoring(_Model):
    prometheus_operator: bool = False
    grafana_dashboards: bool = True
    namespace: str = "monitoring"
    rules_dir: str = "dashboards/prometheus"
    dashboards_dir: str = "dashboards/grafana"
    scrape_interval: str = "30s"


class StackConfig(_Model):
    environment: Literal["dev", "prod"]
    identity: Identity
    secrets: Secrets = Field(default_factory=Secrets)
    gateway: Gateway
    monitoring: Monitoring = Field(default_factory=Monitoring)

    @model_validator(mode="after")
    def _production_rules(self) -> StackConfig:
        if self.environment != "prod":
            return self
        if self.identity.myaccessid.is_acceptance:
            raise ValueError("identity.myaccessid: the acceptance instance is never trusted in production")
        if "@sha256:" not in self.gateway.image:
            raise ValueError("gateway.image: production images are pinned by digest (name@sha256:...)")
        if self.secrets.database is not None and self.secrets.database.sslmode != "verify-full":
            raise ValueError("secrets.database.sslmode: production requires verify-full")
        for uri in self.identity.portal_redirect_uris:
            if not uri.startswith("https://"):
                raise ValueError(f"identity.portal_redirect_uris: {uri!r} must be https:// in production")
        return self


@dataclass(frozen=True)
class StackSecrets:
    """Secret inputs, always Pulumi secrets (encrypted in state, masked in output)."""

    myaccessid_client_secret: pulumi.Output[str] | None
    database_admin_password: pulumi.Output[str] | None


def _format_errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg'].removeprefix('Value error, ')}"
        for err in exc.errors()
    )


def parse_stack_config(data: dict[str, Any]) -> StackConfig:
    """Validate a plain mapping (what `Pulumi.<stack>.yaml` holds under `antenna:`)."""
    try:
        return StackConfig.model_validate(data)
    except ValidationError as exc:
        raise InfraConfigError(_format_errors(exc)) from exc


def load_stack_config(config: pulumi.Config | None = None) -> tuple[StackConfig, StackSecrets]:
    """Read the `antenna:*` configuration of the current stack, and its secrets."""
    cfg = config or pulumi.Config("antenna")
    data: dict[str, Any] = {"environment": cfg.require("environment")}
    for key in ("identity", "secrets", "gateway", "monitoring"):
        if (value := cfg.get_object(key)) is not None:
            data[key] = value
    stack = parse_stack_config(data)
    client_secret = None
    if stack.identity.myaccessid.client_secret_vault_ref is None:
        client_secret = cfg.require_secret("myaccessidClientSecret")
    db_password = None
    if stack.secrets.database is not None:
        db_password = cfg.require_secret("databaseAdminPassword")
    return stack, StackSecrets(myaccessid_client_secret=client_secret, database_admin_password=db_password)

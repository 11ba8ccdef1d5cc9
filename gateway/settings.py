"""Configuration: one YAML file, every value overridable by ``ANTENNA_...`` variables, validated at start.

Secrets never live here, only references to Vault paths. Development mode is not a setting: only
``antenna dev`` can turn it on (it passes a ``DevMode`` to ``create_app``), so no file or variable can
enable it by accident; ``Settings.check_production`` refuses what only development may use.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gateway.billing import BillingFormula, StorageFormula
from gateway.db import Timeouts
from gateway.errors import ConfigurationError

KNOWN_CONNECTORS = ("local", "slurmrestd", "ssh", "firecrest", "unicore")
# Values nobody means, refused anywhere in the file. Not `secret` or `password`: Vault's default KV mount is
# called `secret`, and where a secret would go only a `vault:` reference is accepted anyway.
_PLACEHOLDER = re.compile(r"^(changeme|change-me|placeholder|xxx+|todo|<.*>|\$\{.*\})$", re.I)
_SECRETISH_KEY = re.compile(r"(secret|password|passwd|token|private_key|api_key|cluster_key)", re.I)
_NAME = r"^[a-z][a-z0-9_-]{0,62}$"
Algorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
ProjectSource = Literal["groups", "entitlements"]


def _algorithms(*names: Algorithm) -> list[Algorithm]:
    return list(names)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Section):
    url: str = Field(
        default="sqlite:///var/antenna.db",
        description="SQLAlchemy URL; PostgreSQL (postgresql+psycopg://) in production, SQLite embedded",
    )
    pool_size: int = Field(default=10, ge=1, le=200)
    migrate_on_start: bool = Field(default=True, description="run Alembic migrations at start")
    sqlite_busy_retries: int = Field(default=5, ge=0, le=50)
    connect_timeout_seconds: int = Field(default=10, ge=1, le=300)
    statement_timeout_seconds: float = Field(default=60.0, gt=0, description="PostgreSQL's statement_timeout")
    lock_timeout_seconds: float = Field(default=30.0, gt=0, description="PostgreSQL's lock_timeout")

    def timeouts(self) -> Timeouts:
        return Timeouts(
            connect_seconds=self.connect_timeout_seconds,
            statement_seconds=self.statement_timeout_seconds,
            lock_seconds=self.lock_timeout_seconds,
        )


class OIDCSettings(_Section):
    issuer: str = Field(default="https://keycloak.antenna.example/realms/antenna")
    audience: str = "antenna-gateway"
    algorithms: list[Algorithm] = Field(default_factory=lambda: _algorithms("RS256", "ES256"), min_length=1)
    allowed_azp: list[str] = Field(default_factory=lambda: ["antenna-cli", "antenna-portal"], min_length=1)
    leeway_seconds: int = Field(default=30, ge=0, le=60)
    max_token_lifetime_seconds: int = Field(default=3600, ge=60, le=86400)
    jwks_cache_seconds: int = Field(default=300, ge=10, description="refresh the key set this often")
    jwks_refetch_cooldown_seconds: int = Field(
        default=30, ge=1, description="at most one fetch for unknown kids per window"
    )
    jwks_stale_seconds: int = Field(
        default=3600,
        ge=0,
        description="keep serving the last good keys this long when the IdP is down",
    )
    http_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    person_claim: str = Field(default="myaccessid_cuid", description="falls back to `sub` when absent")
    refused_persons: list[str] = Field(default_factory=lambda: ["test@myaccessid.org"])
    project_sources: list[ProjectSource] = Field(
        default_factory=lambda: list[ProjectSource](["groups", "entitlements"]), min_length=1
    )
    groups_claim: str = "groups"
    projects_group: str = Field(default="/projects", description="groups /projects/<p> and /projects/<p>/pi")
    entitlements_claim: str = "eduperson_entitlement"
    entitlement_namespaces: list[str] = Field(default_factory=lambda: ["urn:geant:antenna.be"])
    entitlement_projects_group: str = Field(default="projects", description="<ns>:group:projects:<p>")
    roles_claim: str = Field(default="realm_access.roles", description="dotted path to the list of roles")
    cli_client_id: str = "antenna-cli"

    @field_validator("issuer")
    @classmethod
    def _issuer_is_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        return value


class PartitionSettings(_Section):
    billing: BillingFormula
    max_time_minutes: int = Field(gt=0)
    max_nodes: int = Field(default=1, ge=1)
    cores_per_node: int = Field(gt=0)
    memory_gb_per_node: int = Field(gt=0)
    gpus_per_node: int = Field(default=0, ge=0)
    exclusive: bool = Field(default=False, description="whole nodes are allocated (and billed)")
    description: str = ""


class SiteSettings(_Section):
    title: str = ""
    connector: str = Field(description=f"one of {', '.join(KNOWN_CONNECTORS)}")
    options: dict[str, Any] = Field(default_factory=dict, description="the connector's own settings")
    partitions: dict[str, PartitionSettings] = Field(min_length=1)
    storage: dict[str, StorageFormula] = Field(default_factory=dict)
    when_unavailable: Literal["queue", "refuse"] = Field(
        default="queue", description="queue submissions while the site is down, or refuse with 503"
    )
    status_interval_seconds: float = Field(default=15.0, gt=0)
    forgotten_grace_minutes: float = Field(
        default=60.0,
        gt=0,
        description="a job missing from the site's queue and accounting this long past its time limit is lost",
    )

    @field_validator("partitions")
    @classmethod
    def _partition_names(cls, value: dict[str, PartitionSettings]) -> dict[str, PartitionSettings]:
        for name in value:
            if not re.match(_NAME, name):
                raise ValueError(f"partition name {name!r} must match {_NAME}")
        return value

    def units(self) -> set[str]:
        return {p.billing.unit for p in self.partitions.values()}


class VaultSettings(_Section):
    enabled: bool = False
    address: str = "https://vault.antenna.example:8200"
    auth_method: Literal["approle", "kubernetes", "token"] = "approle"
    role_id: str = ""
    wrapped_secret_id_file: str = Field(default="", description="file holding a response-wrapped secret-id")
    kubernetes_role: str = "antenna-gateway"
    kv_mount: str = "antenna"
    ssh_mount: str = "ssh-client-signer"
    database_mount: str = "database"
    database_role: str = ""
    ca_cert: str = ""
    secret_ttl_seconds: int = Field(default=300, ge=5)


class LimitsSettings(_Section):
    script_max_bytes: int = Field(default=256 * 1024, ge=1024)
    request_max_bytes: int = Field(default=512 * 1024, ge=2048)
    submissions_per_minute: int = Field(default=60, ge=1, description="per person")
    requests_per_minute: int = Field(default=600, ge=1, description="per person")
    max_active_jobs_per_person: int = Field(default=500, ge=1)
    storage_uri: str = Field(default="memory://", description="limits storage, e.g. redis://127.0.0.1:6379")
    storage_key_prefix: str = Field(
        default="antenna", pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="namespace of the counters in Redis"
    )
    storage_timeout_seconds: float = Field(
        default=0.25, gt=0, le=10, description="how long a request waits for Redis before going on unlimited"
    )
    environment_allowlist: list[str] = Field(
        default_factory=lambda: [
            "OMP_NUM_THREADS",
            "OMP_PROC_BIND",
            "OMP_PLACES",
            "PYTHONUNBUFFERED",
            "HF_HOME",
        ],
        description="names a job may set; a trailing * allows a prefix",
    )


class MetricsSettings(_Section):
    enabled: bool = True


class ForwarderSettings(_Section):
    enabled: bool = True
    batch_size: int = Field(default=20, ge=1, le=1000)
    poll_seconds: float = Field(default=0.5, gt=0)
    max_attempts: int = Field(default=8, ge=1)
    backoff_base_seconds: float = Field(default=1.0, gt=0)
    backoff_max_seconds: float = Field(default=300.0, gt=0)
    uncertain_retry_seconds: float = Field(
        default=30.0, gt=0, description="after a call that may have reached the site, the wait before looking it up"
    )
    lost_lookup_seconds: float = Field(
        default=900.0, gt=0, description="how often a lost job (the site may have it) is looked up by its stamp"
    )


class ReconciliationSettings(_Section):
    """The periodic comparison of the ledger with each site's accounting, run where the forwarder runs."""

    enabled: bool = True
    interval_seconds: float = Field(default=3600.0, gt=0)
    window_hours: float = Field(default=48.0, gt=0, description="how far back each run compares")
    settle_lag_minutes: float = Field(
        default=60.0, ge=0, description="the latest stretch left out: jobs that just ended may still be settling"
    )


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = Field(default=True, alias="json")


class Settings(BaseSettings):
    """The whole configuration. ``load_settings`` is the way to build it from a file."""

    model_config = SettingsConfigDict(
        env_prefix="ANTENNA_", env_nested_delimiter="__", extra="forbid", populate_by_name=True
    )

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    oidc: OIDCSettings = Field(default_factory=OIDCSettings)
    sites: dict[str, SiteSettings] = Field(default_factory=dict)
    vault: VaultSettings = Field(default_factory=VaultSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    forwarder: ForwarderSettings = Field(default_factory=ForwarderSettings)
    reconciliation: ReconciliationSettings = Field(default_factory=ReconciliationSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    public_url: str = Field(default="http://127.0.0.1:8000", description="where clients reach the gateway")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment overrides the file (passed as init values by load_settings); no .env, no secret dirs.
        return (env_settings, init_settings)

    @field_validator("sites")
    @classmethod
    def _site_names(cls, value: dict[str, SiteSettings]) -> dict[str, SiteSettings]:
        for name in value:
            if not re.match(_NAME, name):
                raise ValueError(f"site name {name!r} must match {_NAME}")
        return value

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> Settings:
        password = urlsplit(self.database.url).password
        if password is not None:
            raise ValueError(
                "database.url: a password in the configuration file is refused; "
                "use vault.database_role (dynamic credentials) or a passwordless local socket"
            )
        for site_name, site in self.sites.items():
            prefix = f"sites.{site_name}.options"
            for key, val in _leaves(site.options, prefix):
                secretish = any(_SECRETISH_KEY.search(part) for part in key.removeprefix(prefix).split("."))
                if secretish and not val.startswith("vault:"):
                    raise ValueError(
                        f"{key}: secrets are not allowed in the configuration; "
                        "reference a Vault path instead (vault:<path>#<field>)"
                    )
        for key, val in _leaves(self.model_dump(), ""):
            if _PLACEHOLDER.match(val.strip()):
                raise ValueError(f"{key}: placeholder value {val!r}")
        return self

    def check_production(self) -> None:
        """Refuse what only ``antenna dev`` may use. Raises ConfigurationError naming the key."""
        if urlsplit(self.oidc.issuer).scheme != "https":
            raise ConfigurationError("oidc.issuer: must be an https:// URL outside development mode")
        if "acc.myaccessid.org" in self.oidc.issuer:
            raise ConfigurationError("oidc.issuer: the MyAccessID acceptance instance is never trusted")
        for site_name, site in self.sites.items():
            if site.connector not in KNOWN_CONNECTORS or site.connector == "local":
                raise ConfigurationError(
                    f"sites.{site_name}.connector: {site.connector!r} is not a production connector "
                    f"(known: {', '.join(c for c in KNOWN_CONNECTORS if c != 'local')})"
                )
            if site.options.get("accounting") is False:
                # Without accounting an ended job cannot be priced, and a job the controller forgot cannot
                # be told from one that never ran: money would leak.
                raise ConfigurationError(
                    f"sites.{site_name}.options.accounting: false is for development only; a site whose "
                    "accounting the gateway cannot read cannot be settled"
                )

    def site(self, name: str) -> SiteSettings | None:
        return self.sites.get(name)


def _leaves(value: Any, key: str) -> Iterator[tuple[str, str]]:
    """Every string in a nested structure of mappings and lists, with its dotted key."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _leaves(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{key}.{index}")


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, each starting with the dotted key it concerns."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"] if not str(part).startswith("function-after"))
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"{key or '<root>'}: {message}")
    return "\n".join(lines)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read the YAML file (if any), apply ``ANTENNA_`` variables over it, validate.

    Raises ConfigurationError with a message naming every offending key.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigurationError(f"{path}: cannot read configuration: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigurationError(f"{path}: the top level must be a mapping")
        data = loaded or {}
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigurationError(format_validation_error(exc)) from exc


def data_path(settings: Settings) -> Path | None:
    """The SQLite file of an embedded database, if that is what is configured."""
    url = settings.database.url
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    return None

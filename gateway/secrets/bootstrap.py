"""``antenna vault bootstrap``: prepare a development or test Vault for the gateway, idempotently.

Enables the engines and AppRole, loads ``policies/vault/*.hcl``, creates the gateway's AppRole, the SSH CA
and one SSH role per site, and writes example site credentials where none exist. Each step compares with
what Vault holds first, so a second run changes nothing and says so. Production uses the Pulumi program.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions

from gateway.errors import ConfigurationError
from gateway.secrets.layout import site_path
from gateway.secrets.policies import PolicyContext, load_policies
from gateway.secrets.settings import VaultClientOptions
from gateway.settings import Settings, VaultSettings


@dataclass(frozen=True)
class Change:
    """One thing bootstrap changed, e.g. ``created policy antenna-gateway``. Never holds a secret."""

    action: str
    target: str

    def __str__(self) -> str:
        return f"{self.action} {self.target}"


@dataclass(frozen=True)
class AppRoleSpec:
    """The gateway's AppRole: periodic tokens (renewed forever while the gateway lives), secret-ids that
    work once and only shortly after they are issued."""

    token_period_seconds: int = 3600
    secret_id_ttl_seconds: int = 600
    secret_id_num_uses: int = 1
    secret_id_bound_cidrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class SshRoleSpec:
    ttl_seconds: int = 600
    max_ttl_seconds: int = 1800


def _mounts(listing: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = listing.get("data") or listing
    return data


def _ensure_mount(client: hvac.Client, path: str, kind: str, options: dict[str, str] | None = None) -> list[Change]:
    mounts = _mounts(client.sys.list_mounted_secrets_engines())
    current = mounts.get(f"{path}/")
    label = f"{kind}{'-v' + options['version'] if options and 'version' in options else ''}"
    if current is not None:
        same_options = all((current.get("options") or {}).get(k) == v for k, v in (options or {}).items())
        if current.get("type") != kind or not same_options:
            raise ConfigurationError(f"{path}/ is already mounted as {current.get('type')}, not {label}")
        return []
    client.sys.enable_secrets_engine(backend_type=kind, path=path, options=options)
    return [Change("enabled", f"secrets engine {label} at {path}/")]


def _ensure_auth(client: hvac.Client, path: str, kind: str) -> list[Change]:
    methods = _mounts(client.sys.list_auth_methods())
    current = methods.get(f"{path}/")
    if current is not None:
        if current.get("type") != kind:
            raise ConfigurationError(f"auth/{path}/ is already enabled as {current.get('type')}, not {kind}")
        return []
    client.sys.enable_auth_method(method_type=kind, path=path)
    return [Change("enabled", f"auth method {kind} at auth/{path}/")]


def _ensure_policies(client: hvac.Client, policies_dir: Path, context: PolicyContext) -> list[Change]:
    changes = []
    policies = load_policies(policies_dir, context)
    if not policies:
        raise ConfigurationError(f"no *.hcl policy in {policies_dir}")
    for name, text in policies.items():
        try:
            current = client.sys.read_policy(name=name)["data"]["rules"]
        except hvac.exceptions.InvalidPath:
            current = None
        if current == text:
            continue
        client.sys.create_or_update_policy(name=name, policy=text, pretty_print=False)
        changes.append(Change("created" if current is None else "updated", f"policy {name}"))
    return changes


def _ensure_approle(
    client: hvac.Client, options: VaultClientOptions, context: PolicyContext, spec: AppRoleSpec
) -> list[Change]:
    want: dict[str, Any] = {
        "token_policies": [context.policy_name("antenna-gateway")],
        "token_period": spec.token_period_seconds,
        "token_no_default_policy": True,
        "token_type": "service",
        "bind_secret_id": True,
        "secret_id_ttl": spec.secret_id_ttl_seconds,
        "secret_id_num_uses": spec.secret_id_num_uses,
        "secret_id_bound_cidrs": list(spec.secret_id_bound_cidrs),
    }
    role, mount = options.approle_role, options.approle_mount
    try:
        current = client.auth.approle.read_role(role_name=role, mount_point=mount)["data"]
    except hvac.exceptions.InvalidPath:
        current = None
    if current is not None and all(
        (sorted(current.get(k) or []) == sorted(v)) if isinstance(v, list) else current.get(k) == v
        for k, v in want.items()
    ):
        return []
    client.auth.approle.create_or_update_approle(role_name=role, mount_point=mount, **want)
    return [Change("created" if current is None else "updated", f"AppRole auth/{mount}/role/{role}")]


def ssh_ca_public_key(client: hvac.Client, settings: VaultSettings) -> str | None:
    """The SSH CA's public key (OpenSSH form) for sshd's ``TrustedUserCAKeys``; None before it exists."""
    try:
        response = client.read(f"{settings.ssh_mount}/config/ca")
    except (hvac.exceptions.InvalidRequest, hvac.exceptions.InvalidPath):
        return None
    key = ((response or {}).get("data") or {}).get("public_key")
    return str(key).strip() if key else None


def _ensure_ssh_ca(client: hvac.Client, settings: VaultSettings) -> list[Change]:
    if ssh_ca_public_key(client, settings) is not None:
        return []
    client.write_data(f"{settings.ssh_mount}/config/ca", data={"generate_signing_key": True, "key_type": "ed25519"})
    return [Change("generated", f"SSH CA key pair at {settings.ssh_mount}/config/ca")]


def _ssh_role(spec: SshRoleSpec, accounts: Iterable[str]) -> dict[str, Any]:
    # The role's allow-list is the site's mapped accounts; the gateway policy adds "one principal only".
    return {
        "key_type": "ca",
        "allow_user_certificates": True,
        "allow_host_certificates": False,
        "allowed_users": ",".join(sorted(set(accounts))),
        "default_user": "",
        "allowed_extensions": "",
        "default_extensions": {},
        "allowed_critical_options": "",
        "allow_user_key_ids": False,
        "key_id_format": "antenna-{{role_name}}-{{public_key_hash}}",
        "ttl": spec.ttl_seconds,
        "max_ttl": spec.max_ttl_seconds,
    }


def _role_matches(current: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    for key, value in want.items():
        have = current.get(key)
        if key == "allowed_users":
            have_set = set(filter(None, str(have or "").split(",")))
            if have_set != set(filter(None, str(value).split(","))):
                return False
        elif key in ("allowed_extensions", "allowed_critical_options", "default_user"):
            if (have or "") != value:
                return False
        elif key == "default_extensions":
            if (have or {}) != value:
                return False
        elif have != value:
            return False
    return True


def _read_ssh_role(client: hvac.Client, settings: VaultSettings, site: str) -> dict[str, Any] | None:
    response = client.read(f"{settings.ssh_mount}/roles/{site}")
    if not response:
        return None
    data: dict[str, Any] = response["data"]
    return data


def sync_site_accounts(
    client: hvac.Client,
    settings: VaultSettings,
    site: str,
    accounts: Iterable[str],
    *,
    spec: SshRoleSpec | None = None,
) -> list[Change]:
    """Make ``site``'s SSH role allow exactly ``accounts`` (an operator step after mapping people)."""
    current = _read_ssh_role(client, settings, site)
    want = _ssh_role(spec or SshRoleSpec(), accounts)
    if current is not None and _role_matches(current, want):
        return []
    client.write_data(f"{settings.ssh_mount}/roles/{site}", data=want)
    verb = "created" if current is None else "updated"
    return [
        Change(verb, f"SSH role {settings.ssh_mount}/roles/{site} (allowed users: {want['allowed_users'] or 'none'})")
    ]


def _example_credentials(connector: str, site: str) -> dict[str, str] | None:
    if connector == "slurmrestd":
        # Slurm's jwt_key file holds raw bytes; KV holds them base64-encoded.
        return {"jwt_key": base64.b64encode(secrets.token_bytes(32)).decode()}
    if connector == "firecrest":
        return {"client_id": f"antenna-{site}", "client_secret": secrets.token_urlsafe(32)}
    return None


def _ensure_site_credentials(client: hvac.Client, settings: Settings) -> list[Change]:
    changes = []
    mount = settings.vault.kv_mount
    for site, site_settings in sorted(settings.sites.items()):
        values = _example_credentials(site_settings.connector, site)
        if values is None:
            continue
        try:
            client.secrets.kv.v2.read_secret_metadata(path=site_path(site), mount_point=mount)
            continue  # something is stored already: never overwrite an operator's value
        except hvac.exceptions.InvalidPath:
            pass
        client.secrets.kv.v2.create_or_update_secret(path=site_path(site), secret=values, cas=0, mount_point=mount)
        changes.append(Change("wrote", f"example credentials {mount}/{site_path(site)} ({', '.join(sorted(values))})"))
    return changes


def bootstrap(
    client: hvac.Client,
    settings: Settings,
    policies_dir: Path,
    *,
    options: VaultClientOptions | None = None,
    prefix: str = "",
    site_accounts: Mapping[str, Iterable[str]] | None = None,
    approle: AppRoleSpec | None = None,
    ssh_role: SshRoleSpec | None = None,
    example_credentials: bool = True,
) -> list[Change]:
    """Bring a development/test Vault to the state the gateway needs; return what was changed.

    ``client`` holds a token allowed to do all of it (root on a dev server, or the deploy policy).
    SSH roles are made for sites with the ``ssh`` connector and for every site in ``site_accounts``;
    a site absent from ``site_accounts`` keeps the accounts its role already allows.
    """
    options = options or VaultClientOptions()
    vault = settings.vault
    context = PolicyContext.from_settings(vault, options, prefix=prefix)
    changes: list[Change] = []
    changes += _ensure_mount(client, vault.kv_mount, "kv", {"version": "2"})
    changes += _ensure_mount(client, vault.ssh_mount, "ssh")
    if vault.database_role:
        changes += _ensure_mount(client, vault.database_mount, "database")
    changes += _ensure_auth(client, options.approle_mount, "approle")
    changes += _ensure_policies(client, policies_dir, context)
    changes += _ensure_approle(client, options, context, approle or AppRoleSpec())
    changes += _ensure_ssh_ca(client, vault)
    accounts = dict(site_accounts or {})
    ssh_sites = {name for name, site in settings.sites.items() if site.connector == "ssh"} | set(accounts)
    for site in sorted(ssh_sites):
        if site in accounts:
            changes += sync_site_accounts(client, vault, site, accounts[site], spec=ssh_role)
        elif _read_ssh_role(client, vault, site) is None:
            changes += sync_site_accounts(client, vault, site, (), spec=ssh_role)
    if example_credentials:
        changes += _ensure_site_credentials(client, settings)
    return changes


def read_role_id(client: hvac.Client, options: VaultClientOptions | None = None) -> str:
    """The gateway AppRole's role-id (an identifier, not a secret: useless without a secret-id)."""
    options = options or VaultClientOptions()
    response = client.auth.approle.read_role_id(role_name=options.approle_role, mount_point=options.approle_mount)
    return str(response["data"]["role_id"])


def issue_wrapped_secret_id(
    client: hvac.Client, options: VaultClientOptions | None = None, *, wrap_ttl_seconds: int = 300
) -> str:
    """A new secret-id for the gateway's AppRole, response-wrapped: the caller only ever holds the
    single-use wrapping token, which the gateway unwraps after checking where it was created."""
    options = options or VaultClientOptions()
    response = client.auth.approle.generate_secret_id(
        role_name=options.approle_role, mount_point=options.approle_mount, wrap_ttl=f"{wrap_ttl_seconds}s"
    )
    return str(response["wrap_info"]["token"])

"""Vault (or OpenBao) configuration: mounts, the policies in `policies/vault/*.hcl`, auth roles, SSH CA, database.

The policy files are read when the program runs, through the same loader the gateway's bootstrap and the
Vault tests use (`gateway.secrets.policies`), so what is deployed is what those tests exercised, with paths
rewritten for the configured mounts.
"""

from __future__ import annotations

import re
from pathlib import Path

import pulumi
import pulumi_vault as vault

from antenna_infra.config import InfraConfigError
from antenna_infra.config import Secrets as SecretsConfig
from gateway.secrets.policies import PolicyContext, load_policies

_POLICY_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
KUBERNETES_MOUNT = "kubernetes"


def read_policies(directory: Path, config: SecretsConfig) -> dict[str, str]:
    """`{name: HCL text}` for each `*.hcl` file (name = file stem), paths rendered for the configured mounts."""
    if not directory.is_dir():
        raise InfraConfigError(f"Vault policy directory {directory} does not exist")
    context = PolicyContext(
        kv_mount=config.kv_mount,
        ssh_mount=config.ssh_mount,
        database_mount=config.database_mount,
        approle_mount=config.approle_path,
        kubernetes_mount=KUBERNETES_MOUNT,
        gateway_role=config.gateway_role,
        database_role=config.gateway_role,
    )
    policies = load_policies(directory, context)
    for name in policies:
        if not _POLICY_NAME.match(name):
            raise InfraConfigError(f"{name}.hcl: a policy name must match {_POLICY_NAME.pattern}")
    return policies


class Secrets(pulumi.ComponentResource):
    """KV v2, SSH client CA and database mounts; policies; AppRole and Kubernetes auth for the gateway."""

    policies: dict[str, vault.Policy]

    def __init__(
        self,
        name: str,
        config: SecretsConfig,
        policies_dir: Path,
        *,
        gateway_namespace: str,
        database_admin_password: pulumi.Input[str] | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("antenna:index:Secrets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        texts = read_policies(policies_dir, config)
        missing = sorted(set(config.gateway_policies) - set(texts))
        if missing:
            raise InfraConfigError(
                f"secrets.gateway_policies: no {', '.join(m + '.hcl' for m in missing)} in {policies_dir}"
            )
        self.policies = {
            policy: vault.Policy(f"{name}-policy-{policy}", name=policy, policy=text, opts=child)
            for policy, text in texts.items()
        }
        gateway_policies = [self.policies[p].name for p in config.gateway_policies]

        kv = vault.Mount(
            f"{name}-kv",
            path=config.kv_mount,
            type="kv",
            options={"version": "2"},
            description="Antenna secrets: site keys, robot credentials",
            opts=child,
        )
        vault.kv.SecretBackendV2(f"{name}-kv-config", mount=kv.path, max_versions=10, opts=child)

        # AppRole for the gateway on VMs (the deploy step delivers a response-wrapped secret-id).
        approle = vault.AuthBackend(f"{name}-approle", type="approle", path=config.approle_path, opts=child)
        vault.approle.AuthBackendRole(
            f"{name}-approle-gateway",
            backend=approle.path,
            role_name=config.gateway_role,
            token_policies=gateway_policies,
            token_no_default_policy=True,
            token_type="service",  # noqa: S106 - a token kind
            token_period=config.token_period_seconds,
            bind_secret_id=True,
            secret_id_ttl=config.secret_id_ttl_seconds,
            secret_id_num_uses=1,
            secret_id_bound_cidrs=config.secret_id_bound_cidrs or None,
            opts=child,
        )

        if config.kubernetes_host is not None:
            # Kubernetes auth for the gateway's pods: bound to its service account and namespace.
            k8s = vault.AuthBackend(f"{name}-kubernetes", type="kubernetes", path=KUBERNETES_MOUNT, opts=child)
            k8s_config = vault.kubernetes.AuthBackendConfig(
                f"{name}-kubernetes-config",
                backend=k8s.path,
                kubernetes_host=config.kubernetes_host,
                opts=child,
            )
            vault.kubernetes.AuthBackendRole(
                f"{name}-kubernetes-gateway",
                backend=k8s.path,
                role_name=config.gateway_role,
                bound_service_account_names=[config.gateway_role],
                bound_service_account_namespaces=[gateway_namespace],
                token_policies=gateway_policies,
                token_no_default_policy=True,
                token_period=config.token_period_seconds,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[k8s_config]),
            )

        # SSH client CA: short-lived user certificates for per-person site accounts.
        ssh = vault.Mount(f"{name}-ssh", path=config.ssh_mount, type="ssh", description="SSH client CA", opts=child)
        ca = vault.ssh.SecretBackendCa(
            f"{name}-ssh-ca", backend=ssh.path, generate_signing_key=True, key_type="ed25519", opts=child
        )
        for site in config.ssh_sites:
            vault.ssh.SecretBackendRole(
                f"{name}-ssh-{site}",
                backend=ssh.path,
                name=site,
                key_type="ca",
                allow_user_certificates=True,
                allow_host_certificates=False,
                allowed_users="",
                default_user="",
                allow_user_key_ids=False,
                key_id_format="antenna-{{role_name}}-{{public_key_hash}}",
                # Batch submission needs no pty, forwarding or forced commands.
                default_extensions={},
                allowed_extensions="",
                allowed_critical_options="",
                ttl=str(config.ssh_cert_ttl_seconds),
                max_ttl=str(config.ssh_cert_max_ttl_seconds),
                # The accounts a site's role may sign for are kept by `antenna vault sync-accounts`.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[ca], ignore_changes=["allowedUsers"]),
            )
        self.ssh_ca_public_key = ca.public_key

        if config.database is not None:
            if database_admin_password is None:
                raise InfraConfigError("secrets.database is set but antenna:databaseAdminPassword is not")
            db = config.database
            mount = vault.Mount(
                f"{name}-database",
                path=config.database_mount,
                type="database",
                description="Dynamic PostgreSQL users for the gateway",
                opts=child,
            )
            connection = vault.database.SecretBackendConnection(
                f"{name}-database-postgres",
                backend=mount.path,
                name="antenna",
                plugin_name="postgresql-database-plugin",
                allowed_roles=[config.gateway_role],
                verify_connection=True,
                postgresql=vault.database.SecretBackendConnectionPostgresqlArgs(
                    # Vault fills in the templated credentials; the URL itself holds none.
                    connection_url=(
                        f"postgresql://{{{{username}}}}:{{{{password}}}}@{db.host}:{db.port}/{db.name}"
                        f"?sslmode={db.sslmode}"
                    ),
                    username=db.admin_username,
                    password=pulumi.Output.secret(database_admin_password),
                ),
                opts=child,
            )
            vault.database.SecretBackendRole(
                f"{name}-database-gateway",
                backend=mount.path,
                name=config.gateway_role,
                db_name=connection.name,
                creation_statements=[
                    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
                    f"VALID UNTIL '{{{{expiration}}}}' IN ROLE {db.app_role};",
                    # Objects the gateway creates (migrations) belong to the group role, not to a
                    # user that Vault drops at the end of its lease.
                    f"ALTER ROLE \"{{{{name}}}}\" SET role = '{db.app_role}';",
                ],
                revocation_statements=['DROP ROLE IF EXISTS "{{name}}";'],
                default_ttl=db.credential_ttl_seconds,
                max_ttl=db.credential_max_ttl_seconds,
                opts=child,
            )

        self.register_outputs(
            {
                "kv_mount": kv.path,
                "ssh_mount": ssh.path,
                "policies": sorted(texts),
                "ssh_ca_public_key": ca.public_key,
            }
        )

"""Vault (or OpenBao) configuration: mounts, the policies in `policies/vault/*.hcl`, auth roles, SSH CA, database.

The policy files are read when the program runs, so the files the Vault tests exercise are the ones deployed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pulumi
import pulumi_vault as vault

from antenna_infra.config import InfraConfigError
from antenna_infra.config import Secrets as SecretsConfig

_POLICY_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def read_policies(directory: Path) -> dict[str, str]:
    """`{name: HCL text}` for each `*.hcl` file, the name being the file's stem."""
    if not directory.is_dir():
        raise InfraConfigError(f"Vault policy directory {directory} does not exist")
    policies = {}
    for path in sorted(directory.glob("*.hcl")):
        if not _POLICY_NAME.match(path.stem):
            raise InfraConfigError(f"{path.name}: a policy name must match {_POLICY_NAME.pattern}")
        policies[path.stem] = path.read_text(encoding="utf-8")
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

        texts = read_policies(policies_dir)
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

        # AppRole for the gateway on VMs (Ansible delivers a response-wrapped secret-id).
        approle = vault.AuthBackend(f"{name}-approle", type="approle", path=config.approle_path, opts=child)
        vault.approle.AuthBackendRole(
            f"{name}-approle-gateway",
            backend=approle.path,
            role_name=config.gateway_role,
            token_policies=gateway_policies,
            token_no_default_policy=True,
            token_type="service",  # noqa: S106 - a token kind
            token_ttl=config.token_ttl_seconds,
            token_max_ttl=config.token_ttl_seconds * 4,
            bind_secret_id=True,
            secret_id_ttl=config.secret_id_ttl_seconds,
            secret_id_num_uses=1,
            secret_id_bound_cidrs=config.secret_id_bound_cidrs or None,
            opts=child,
        )

        if config.kubernetes_host is not None:
            # Kubernetes auth for the gateway's pods: bound to its service account and namespace.
            k8s = vault.AuthBackend(f"{name}-kubernetes", type="kubernetes", path="kubernetes", opts=child)
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
                audience="vault",
                token_policies=gateway_policies,
                token_no_default_policy=True,
                token_ttl=config.token_ttl_seconds,
                token_max_ttl=config.token_ttl_seconds * 4,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[k8s_config]),
            )

        # SSH client CA: short-lived user certificates for per-person site accounts.
        ssh = vault.Mount(f"{name}-ssh", path=config.ssh_mount, type="ssh", description="SSH client CA", opts=child)
        ca = vault.ssh.SecretBackendCa(
            f"{name}-ssh-ca", backend=ssh.path, generate_signing_key=True, key_type="ssh-rsa", key_bits=4096, opts=child
        )
        vault.ssh.SecretBackendRole(
            f"{name}-ssh-gateway",
            backend=ssh.path,
            name=config.gateway_role,
            key_type="ca",
            allow_user_certificates=True,
            allow_host_certificates=False,
            allowed_users=config.ssh_allowed_users,
            allow_user_key_ids=False,
            key_id_format="antenna-{{token_display_name}}",
            algorithm_signer="rsa-sha2-512",
            # Batch submission needs no pty or forwarding.
            default_extensions={},
            allowed_extensions="",
            ttl=config.ssh_cert_ttl,
            max_ttl=config.ssh_cert_max_ttl,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ca]),
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

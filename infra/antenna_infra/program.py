"""Builds the whole stack from its configuration; `infra/__main__.py` calls `run()` under the Pulumi engine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi

from antenna_infra.config import StackConfig, StackSecrets, load_stack_config
from antenna_infra.gateway import Gateway
from antenna_infra.identity import CLI_CLIENT, PORTAL_CLIENT, Identity
from antenna_infra.monitoring import Monitoring
from antenna_infra.secrets import Secrets

REPO_ROOT = Path(__file__).resolve().parents[2]
# Component resource types, for `pulumi up --target` of one part (as `antenna deploy --only` does).
COMPONENT_TYPES = {
    "identity": "antenna:index:Identity",
    "secrets": "antenna:index:Secrets",
    "gateway": "antenna:index:Gateway",
    "monitoring": "antenna:index:Monitoring",
}


@dataclass(frozen=True)
class Components:
    identity: Identity
    secrets: Secrets
    gateway: Gateway
    monitoring: Monitoring


def build(stack: StackConfig, secrets: StackSecrets, repo_root: Path = REPO_ROOT) -> Components:
    """Declare every resource of the stack. Paths in the configuration are relative to `repo_root`."""
    identity = Identity("identity", stack.identity, client_secret=secrets.myaccessid_client_secret)
    vault = Secrets(
        "secrets",
        stack.secrets,
        repo_root / stack.secrets.policies_dir,
        gateway_namespace=stack.gateway.namespace,
        database_admin_password=secrets.database_admin_password,
    )
    gateway = Gateway(
        "gateway",
        stack,
        gateway_clients=[CLI_CLIENT, PORTAL_CLIENT],
        # The gateway's Vault role and Keycloak realm must exist before its pods start.
        opts=pulumi.ResourceOptions(depends_on=[identity, vault]),
    )
    monitoring = Monitoring(
        "monitoring",
        stack.monitoring,
        rules_dir=repo_root / stack.monitoring.rules_dir,
        dashboards_dir=repo_root / stack.monitoring.dashboards_dir,
        gateway_namespace=stack.gateway.namespace,
        opts=pulumi.ResourceOptions(depends_on=[gateway]),
    )
    return Components(identity, vault, gateway, monitoring)


def run() -> None:
    """Entry point under the Pulumi engine: read this stack's configuration, build, export."""
    stack, secrets = load_stack_config()
    parts = build(stack, secrets)
    pulumi.export("issuer", stack.identity.issuer)
    pulumi.export("clients", {key: c.client_id for key, c in parts.identity.clients.items()})
    pulumi.export("vault_policies", sorted(parts.secrets.policies))
    pulumi.export("ssh_ca_public_key", parts.secrets.ssh_ca_public_key)
    pulumi.export("gateway_service", parts.gateway.service.metadata.name)

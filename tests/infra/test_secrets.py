"""The Vault (OpenBao) configuration the program declares: policies from `policies/vault/*.hcl`, mounts, roles.

The Pulumi engine cannot run here, so the program runs under Pulumi's mock runtime (offline) and these tests
read the inputs it would send to the Vault provider. The policy files themselves are exercised against a real
OpenBao by the Vault tests; here temporary files prove that the program deploys whichever files exist.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from antenna_infra.config import InfraConfigError
from antenna_infra.config import Secrets as SecretsConfig
from antenna_infra.secrets import read_policies
from antenna_policies.rules import violations

from tests.infra.harness import (
    GATEWAY_POLICY,
    PROD_SECRETS,
    REPO,
    SECRET_SIG,
    TEST_SECRETS,
    Recording,
    make_repo,
    run_program,
    stack_file,
)


def policies(rec: Recording) -> dict[str, str]:
    return {r.inputs["name"]: r.inputs["policy"] for r in rec.of_type("vault:index/policy:Policy")}


def test_one_vault_policy_per_hcl_file_with_its_text(dev: Recording, repo_root: Path) -> None:
    files = {p.stem: p.read_text() for p in (repo_root / "policies" / "vault").glob("*.hcl")}
    assert policies(dev) == files
    assert set(files) == {"antenna-gateway", "antenna-operator"}


def test_policy_files_are_read_when_the_program_runs(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path,
        {
            "antenna-gateway": GATEWAY_POLICY,
            "antenna-auditor": 'path "sys/audit" { capabilities = ["read"] }\n',
        },
    )
    rec = run_program(stack_file("dev"), repo_root=repo)
    assert set(policies(rec)) == {"antenna-gateway", "antenna-auditor"}
    assert policies(rec)["antenna-auditor"] == 'path "sys/audit" { capabilities = ["read"] }\n'


def test_a_missing_gateway_policy_file_stops_the_program(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"antenna-operator": 'path "antenna/*" { capabilities = ["read"] }'})
    with pytest.raises(InfraConfigError, match=r"antenna-gateway\.hcl"):
        run_program(stack_file("dev"), repo_root=repo)


def test_a_missing_policy_directory_stops_the_program(tmp_path: Path) -> None:
    with pytest.raises(InfraConfigError, match="does not exist"):
        run_program(stack_file("dev"), repo_root=tmp_path)


def test_a_policy_file_name_must_be_a_policy_name(tmp_path: Path) -> None:
    (tmp_path / "Bad Name.hcl").write_text('path "x" { capabilities = ["read"] }')
    with pytest.raises(InfraConfigError, match="policy name"):
        read_policies(tmp_path, SecretsConfig())


def test_policy_paths_follow_the_configured_mounts(tmp_path: Path) -> None:
    (tmp_path / "antenna-gateway.hcl").write_text(GATEWAY_POLICY)
    texts = read_policies(tmp_path, SecretsConfig(kv_mount="kv-antenna", ssh_mount="ssh-sites"))
    assert 'path "kv-antenna/data/sites/*"' in texts["antenna-gateway"]
    assert 'path "ssh-sites/sign/antenna-gateway"' in texts["antenna-gateway"]


def test_the_committed_policies_and_dashboards_deploy() -> None:
    """The program over this repository's own policies/vault and dashboards/, as `pulumi up` reads them."""
    rec = run_program(stack_file("prod"), repo_root=REPO, stack="prod", secrets=PROD_SECRETS)
    committed = {p.stem for p in (REPO / "policies" / "vault").glob("*.hcl")}
    assert "antenna-gateway" in committed
    assert set(policies(rec)) == committed
    dashboards = {r.inputs["metadata"]["name"] for r in rec.of_type("kubernetes:core/v1:ConfigMap")}
    assert len(dashboards - {"antenna-gateway-config"}) == len(list((REPO / "dashboards" / "grafana").glob("*.json")))
    # The committed policies pass the deployment rules (policies/pulumi), sudo grants included.
    assert violations(rec.views()) == {}


def test_kv_v2_mount(dev: Recording) -> None:
    mounts = {r.inputs["path"]: r.inputs for r in dev.of_type("vault:index/mount:Mount")}
    assert mounts["antenna"]["type"] == "kv"
    assert mounts["antenna"]["options"] == {"version": "2"}
    assert set(mounts) == {"antenna", "ssh-client-signer", "database"}


def test_approle_for_the_gateway_gets_only_its_policies_and_single_use_secret_ids(dev: Recording) -> None:
    (backend,) = [r for r in dev.of_type("vault:index/authBackend:AuthBackend") if r.inputs["type"] == "approle"]
    (role,) = dev.of_type("vault:appRole/authBackendRole:AuthBackendRole")
    assert role.deps["backend"] == (backend.urn,)
    assert role.inputs["roleName"] == "antenna-gateway"
    assert role.inputs["tokenPolicies"] == ["antenna-gateway"]
    assert role.inputs["tokenNoDefaultPolicy"] is True
    assert role.inputs["tokenPeriod"] == 3600
    assert role.inputs["bindSecretId"] is True
    assert role.inputs["secretIdNumUses"] == 1
    assert role.inputs["secretIdTtl"] == 600


def test_prod_binds_secret_ids_to_the_gateway_network(prod: Recording) -> None:
    (role,) = prod.of_type("vault:appRole/authBackendRole:AuthBackendRole")
    assert role.inputs["secretIdBoundCidrs"] == ["10.20.0.0/24"]


def test_kubernetes_auth_is_bound_to_the_gateway_service_account_and_namespace(dev: Recording) -> None:
    (role,) = dev.of_type("vault:kubernetes/authBackendRole:AuthBackendRole")
    assert role.inputs["boundServiceAccountNames"] == ["antenna-gateway"]
    assert role.inputs["boundServiceAccountNamespaces"] == ["antenna"]
    assert role.inputs["tokenPolicies"] == ["antenna-gateway"]


def test_ssh_ca_signs_short_lived_user_certificates_per_ssh_site(dev: Recording) -> None:
    (ca,) = dev.of_type("vault:ssh/secretBackendCa:SecretBackendCa")
    assert ca.inputs["generateSigningKey"] is True
    assert ca.inputs["keyType"] == "ed25519"
    # The gateway signs at <ssh mount>/sign/<site>: one role per site using the ssh connector.
    (role,) = dev.of_type("vault:ssh/secretBackendRole:SecretBackendRole")
    assert role.inputs["name"] == "lucia"
    assert role.inputs["keyType"] == "ca"
    assert role.inputs["allowUserCertificates"] is True
    assert role.inputs["allowHostCertificates"] is False
    assert role.inputs["ttl"] == "600"
    assert role.inputs["maxTtl"] == "1800"
    assert role.inputs["defaultExtensions"] == {}
    assert role.inputs["allowedExtensions"] == ""
    assert role.inputs["allowedCriticalOptions"] == ""


def test_ssh_role_leaves_the_account_allow_list_to_sync_accounts(dev: Recording) -> None:
    (role,) = dev.of_type("vault:ssh/secretBackendRole:SecretBackendRole")
    # Created empty (signs for nobody); `antenna vault sync-accounts` maintains it, so Pulumi ignores it.
    assert role.inputs["allowedUsers"] == ""
    assert role.ignore_changes == ("allowedUsers",)


def test_database_role_makes_expiring_users_in_the_app_role(dev: Recording) -> None:
    (role,) = dev.of_type("vault:database/secretBackendRole:SecretBackendRole")
    assert role.inputs["name"] == "antenna-gateway"
    statements = " ".join(role.inputs["creationStatements"])
    assert "VALID UNTIL '{{expiration}}'" in statements
    assert "IN ROLE antenna_app" in statements
    assert role.inputs["defaultTtl"] == 3600


def test_database_connection_holds_its_password_only_as_a_pulumi_secret(dev: Recording) -> None:
    (connection,) = dev.of_type("vault:database/secretBackendConnection:SecretBackendConnection")
    postgresql = connection.inputs["postgresql"]
    assert SECRET_SIG in postgresql
    assert postgresql["value"]["password"] == TEST_SECRETS["antenna:databaseAdminPassword"]
    # Vault fills the credentials into the URL; the URL itself names none.
    assert postgresql["value"]["connectionUrl"].startswith("postgresql://{{username}}:{{password}}@")
    assert connection.inputs["allowedRoles"] == ["antenna-gateway"]


def test_database_is_optional_and_needs_its_secret_only_then(repo_root: Path) -> None:
    config = stack_file("dev")
    config["antenna:secrets"] = {k: v for k, v in config["antenna:secrets"].items() if k != "database"}
    rec = run_program(config, repo_root=repo_root, secrets={"antenna:myaccessidClientSecret": "s-for-tests"})
    assert rec.of_type("vault:database/secretBackendConnection:SecretBackendConnection") == []


def test_every_vault_resource_belongs_to_the_secrets_component(dev: Recording) -> None:
    (component,) = dev.of_type("antenna:index:Secrets")
    vault = [r for r in dev.resources if r.type.startswith("vault:")]
    assert all(r.parent == component.urn for r in vault)
    assert dev.children(component) == vault

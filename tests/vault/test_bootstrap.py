"""`antenna vault bootstrap` against a real OpenBao: what the first run changes, that a second run changes
nothing, that operators' values survive it, and the CLI's whole development flow down to a gateway login."""

from __future__ import annotations

import base64
import stat
import uuid
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gateway.errors import ConfigurationError
from gateway.secrets.bootstrap import bootstrap, sync_site_accounts
from gateway.secrets.cli import vault_app
from gateway.secrets.policies import PolicyContext, load_policies
from gateway.secrets.settings import VaultClientOptions
from gateway.secrets.vault import VaultSecretStore
from gateway.settings import Settings, VaultSettings
from tests.support.openbao import OpenBao
from tests.vault.support import POLICIES_DIR, OwnOpenBao, root_client, site


def _fresh(openbao: OpenBao) -> tuple[Settings, VaultClientOptions, str]:
    sfx = uuid.uuid4().hex[:8]
    vault = VaultSettings(enabled=True, address=openbao.address, kv_mount=f"kv-{sfx}", ssh_mount=f"ssh-{sfx}")
    settings = Settings(
        vault=vault, sites={"lumi": site("slurmrestd"), "lucia": site("ssh"), "jupiter": site("firecrest")}
    )
    return settings, VaultClientOptions(approle_mount=f"approle-{sfx}"), f"t{sfx}-"


def test_first_run_sets_everything_up_and_a_second_run_changes_nothing(openbao: OpenBao) -> None:
    settings, options, prefix = _fresh(openbao)
    root = root_client(openbao)
    kv, ssh, approle = settings.vault.kv_mount, settings.vault.ssh_mount, options.approle_mount
    first = bootstrap(root, settings, POLICIES_DIR, options=options, prefix=prefix, site_accounts={"lucia": ["alice"]})
    policies = sorted(f"created policy {prefix}{p.stem}" for p in POLICIES_DIR.glob("*.hcl"))
    assert [str(c) for c in first] == [
        f"enabled secrets engine kv-v2 at {kv}/",
        f"enabled secrets engine ssh at {ssh}/",
        f"enabled auth method approle at auth/{approle}/",
        *policies,
        f"created AppRole auth/{approle}/role/antenna-gateway",
        f"generated SSH CA key pair at {ssh}/config/ca",
        f"created SSH role {ssh}/roles/lucia (allowed users: alice)",
        f"wrote example credentials {kv}/sites/jupiter (client_id, client_secret)",
        f"wrote example credentials {kv}/sites/lumi (jwt_key)",
    ]
    assert (
        bootstrap(root, settings, POLICIES_DIR, options=options, prefix=prefix, site_accounts={"lucia": ["alice"]})
        == []
    )
    context = PolicyContext.from_settings(settings.vault, options, prefix=prefix)
    for name, text in load_policies(POLICIES_DIR, context).items():
        assert root.sys.read_policy(name=name)["data"]["rules"] == text
    lumi = root.secrets.kv.v2.read_secret_version(path="sites/lumi", mount_point=kv, raise_on_deleted_version=True)
    key = lumi["data"]["data"]["jwt_key"]
    assert len(base64.b64decode(key)) == 32
    assert all(key not in str(change) for change in first)
    role = root.auth.approle.read_role(role_name="antenna-gateway", mount_point=approle)["data"]
    assert role["token_policies"] == [f"{prefix}antenna-gateway"]
    assert (role["secret_id_num_uses"], role["token_no_default_policy"]) == (1, True)


def test_drift_is_repaired_and_operators_values_are_kept(openbao: OpenBao) -> None:
    settings, options, prefix = _fresh(openbao)
    root = root_client(openbao)
    bootstrap(root, settings, POLICIES_DIR, options=options, prefix=prefix, site_accounts={"lucia": ["alice"]})
    kv, ssh = settings.vault.kv_mount, settings.vault.ssh_mount
    root.secrets.kv.v2.create_or_update_secret(path="sites/lumi", secret={"jwt_key": "operator-set"}, mount_point=kv)
    sync_site_accounts(root, settings.vault, "lucia", ["alice", "bob"])  # an operator mapped bob
    root.sys.create_or_update_policy(name=f"{prefix}antenna-gateway", policy='path "x" { capabilities = ["read"] }')
    changes = bootstrap(root, settings, POLICIES_DIR, options=options, prefix=prefix)
    assert [str(c) for c in changes] == [f"updated policy {prefix}antenna-gateway"]
    lumi = root.secrets.kv.v2.read_secret_version(path="sites/lumi", mount_point=kv, raise_on_deleted_version=True)
    assert lumi["data"]["data"] == {"jwt_key": "operator-set"}
    assert root.read(f"{ssh}/roles/lucia")["data"]["allowed_users"] in ("alice,bob", "bob,alice")


def test_a_mount_of_another_kind_is_refused_not_overwritten(openbao: OpenBao) -> None:
    settings, options, prefix = _fresh(openbao)
    root = root_client(openbao)
    root.sys.enable_secrets_engine("kv", path=settings.vault.kv_mount, options={"version": "1"})
    with pytest.raises(ConfigurationError, match="already mounted as kv, not kv-v2"):
        bootstrap(root, settings, POLICIES_DIR, options=options, prefix=prefix)


@pytest.mark.anyio
async def test_cli_development_flow_ends_in_a_gateway_login(own_openbao: OwnOpenBao, tmp_path: Path) -> None:
    server = own_openbao.server
    config = tmp_path / "antenna.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "vault": {"enabled": True, "address": server.address},
                "sites": {"lumi": site("slurmrestd").model_dump(mode="json")},
            }
        )
    )
    runner = CliRunner()
    env = {"VAULT_TOKEN": server.root_token, "ANTENNA_CONFIG": str(config)}
    app = vault_app()
    args = ["bootstrap", "--policies-dir", str(POLICIES_DIR), "--account", "lumi:alice"]
    first = runner.invoke(app, args, env=env)
    assert first.exit_code == 0, first.output
    assert "created policy antenna-gateway" in first.output
    assert "wrote example credentials antenna/sites/lumi (jwt_key)" in first.output
    second = runner.invoke(app, args, env=env)
    assert second.exit_code == 0, second.output
    assert second.output.strip() == "nothing to change: Vault is already bootstrapped"

    secret_file = tmp_path / "secret-id"
    issued = runner.invoke(app, ["issue-secret-id", "--out", str(secret_file)], env=env)
    assert issued.exit_code == 0, issued.output
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert secret_file.read_text().strip() not in issued.output
    role_id = runner.invoke(app, ["role-id"], env=env).output.strip()
    ca = runner.invoke(app, ["ca-public-key"], env=env).output
    assert ca.startswith("ssh-ed25519 ")

    settings = VaultSettings(
        enabled=True, address=server.address, role_id=role_id, wrapped_secret_id_file=str(secret_file)
    )
    store = VaultSecretStore(settings, background=False)
    assert len(base64.b64decode((await store.site_credentials("lumi")).get("jwt_key"))) == 32


def test_cli_without_a_token_says_so(tmp_path: Path) -> None:
    config = tmp_path / "antenna.yaml"
    config.write_text("vault: {enabled: true, address: 'http://127.0.0.1:9'}\n")
    result = CliRunner().invoke(
        vault_app(), ["bootstrap", "--config", str(config)], env={"VAULT_TOKEN": "", "BAO_TOKEN": ""}
    )
    assert result.exit_code == 2
    assert "VAULT_TOKEN" in result.output

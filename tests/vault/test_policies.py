"""The Vault policies as code: every row of policies/vault/capabilities.yaml checked with sys/capabilities
against a real OpenBao, `bao policy fmt` clean, and the path rewriting for non-default mounts."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import hvac
import pytest
import yaml

from gateway.secrets.policies import PolicyContext, load_policies, policy_files
from tests.support.openbao import OpenBao, bao_binary
from tests.vault.support import POLICIES_DIR, root_client

TABLE = yaml.safe_load((POLICIES_DIR / "capabilities.yaml").read_text(encoding="utf-8"))["checks"]


def test_every_policy_file_is_in_the_table_and_every_table_policy_exists() -> None:
    files = set(policy_files(POLICIES_DIR))
    assert files == {row["policy"] for row in TABLE}
    assert {"antenna-gateway", "antenna-operator", "antenna-deploy", "antenna-prometheus"} <= files
    for row in TABLE:
        assert row["allowed"], f"{row['name']}: needs allowed rows"
        assert row["denied"], f"{row['name']}: needs denied rows"


@pytest.mark.parametrize("name", sorted(policy_files(POLICIES_DIR)))
def test_policy_file_passes_bao_policy_fmt_unchanged(name: str, tmp_path: Path) -> None:
    source = POLICIES_DIR / f"{name}.hcl"
    copy = tmp_path / source.name
    shutil.copy(source, copy)
    result = subprocess.run([bao_binary(), "policy", "fmt", str(copy)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert copy.read_text() == source.read_text(), "run `bao policy fmt` on the file and commit it"


def _token_for(root: hvac.Client, policy: str, metadata: dict[str, str] | None) -> str:
    """A token whose only policy is ``policy``; templated policies get an entity carrying ``metadata``."""
    if metadata is None:
        response = root.auth.token.create(policies=[policy], no_default_policy=True, ttl="10m")
        return str(response["auth"]["client_token"])
    mount = f"userpass-{uuid.uuid4().hex[:8]}"
    root.sys.enable_auth_method("userpass", path=mount)
    accessor = root.sys.list_auth_methods()["data"][f"{mount}/"]["accessor"]
    root.write_data(f"auth/{mount}/users/probe", data={"password": "probe-pw", "token_no_default_policy": True})
    entity = root.secrets.identity.create_or_update_entity(name=f"probe-{mount}", policies=[policy], metadata=metadata)
    root.secrets.identity.create_or_update_entity_alias(
        name="probe", canonical_id=entity["data"]["id"], mount_accessor=accessor
    )
    login = root.auth.userpass.login("probe", "probe-pw", mount_point=mount, use_token=False)
    return str(login["auth"]["client_token"])


@pytest.mark.parametrize("row", TABLE, ids=[row["name"] for row in TABLE])
def test_capabilities_table_row_holds_in_openbao(openbao: OpenBao, row: dict[str, Any]) -> None:
    root = root_client(openbao)
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    context = PolicyContext(prefix=prefix)
    for name, text in load_policies(POLICIES_DIR, context).items():
        root.sys.create_or_update_policy(name=name, policy=text, pretty_print=False)
    token = _token_for(root, context.policy_name(row["policy"]), row.get("entity_metadata"))
    # The table names the default policy names; this test's copies carry a prefix.
    expected = {context.render_path(p): sorted(caps) for p, caps in row["allowed"].items()}
    expected |= {context.render_path(p): ["deny"] for p in row["denied"]}
    answer = root.write_data("sys/capabilities", data={"token": token, "paths": list(expected)})
    got = {path: sorted(answer["data"][path]) for path in expected}
    assert got == expected


def test_paths_are_rewritten_for_other_mounts_and_names() -> None:
    ctx = PolicyContext(
        kv_mount="kv",
        ssh_mount="ssh",
        database_mount="db",
        approle_mount="ar",
        gateway_role="gw",
        database_role="gwdb",
        prefix="x-",
    )
    cases = {
        "antenna/data/sites/*": "kv/data/sites/*",
        "ssh-client-signer/sign/*": "ssh/sign/*",
        "database/creds/antenna-gateway": "db/creds/gwdb",
        "database/roles/*": "db/roles/*",
        "auth/approle/role/antenna-gateway/secret-id": "auth/ar/role/gw/secret-id",
        "sys/mounts/antenna": "sys/mounts/kv",
        "sys/auth/approle": "sys/auth/ar",
        "sys/leases/revoke-prefix/database/creds/antenna-gateway": "sys/leases/revoke-prefix/db/creds/gwdb",
        "sys/policies/acl/antenna-*": "sys/policies/acl/x-antenna-*",
        "auth/token/lookup-self": "auth/token/lookup-self",
        "sys/metrics": "sys/metrics",
    }
    assert {path: ctx.render_path(path) for path in cases} == cases
    rendered = ctx.render((POLICIES_DIR / "antenna-gateway.hcl").read_text())
    assert 'path "kv/data/sites/*"' in rendered
    assert "antenna/" not in rendered.replace("antenna-", "")

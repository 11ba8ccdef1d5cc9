"""The playbooks without a host: syntax, ansible-lint's production profile, and each role's declared interface."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.playbooks.site import PLAYBOOKS

ROLES = sorted(path.name for path in (PLAYBOOKS / "roles").iterdir() if path.is_dir())
INVENTORIES = sorted(path.name for path in (PLAYBOOKS / "inventories").iterdir() if path.is_dir())


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_the_issue_s_roles_are_all_there() -> None:
    expected = {"gateway", "openbao", "keycloak", "prometheus", "node_exporter", "alertmanager", "reverse_proxy"}
    assert expected <= set(ROLES)
    plays = {role["role"] for play in _load(PLAYBOOKS / "site.yml") for role in play["roles"]}
    assert plays == set(ROLES)


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_site_passes_syntax_check(inventory: str) -> None:
    result = subprocess.run(
        [_tool("ansible-playbook"), "--syntax-check", "-i", f"inventories/{inventory}", "site.yml"],
        cwd=PLAYBOOKS,
        capture_output=True,
        text=True,
        env=os.environ | {"ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg")},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_ansible_lint_production_profile_passes() -> None:
    result = subprocess.run(
        [_tool("ansible-lint"), "--offline", "--nocolor", "-c", ".ansible-lint", "site.yml", "roles", "inventories"],
        cwd=PLAYBOOKS,
        capture_output=True,
        text=True,
        env=os.environ | {"NO_COLOR": "1"},
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Profile 'production' was required, and it passed" in output


@pytest.mark.parametrize("role", ROLES)
def test_role_has_metadata_argument_specs_and_handlers(role: str) -> None:
    root = PLAYBOOKS / "roles" / role
    assert _load(root / "meta/main.yml")["galaxy_info"]["description"]
    handlers = _load(root / "handlers/main.yml")
    assert handlers, f"{role} has no handlers"
    spec = _load(root / "meta/argument_specs.yml")["argument_specs"]["main"]
    assert spec["short_description"]


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_declare_every_default_and_agree_with_it(role: str) -> None:
    root = PLAYBOOKS / "roles" / role
    defaults: dict[str, Any] = _load(root / "defaults/main.yml") or {}
    options: dict[str, Any] = _load(root / "meta/argument_specs.yml")["argument_specs"]["main"]["options"]
    assert sorted(set(defaults) - set(options)) == [], "defaults without a declaration"
    undeclared = sorted(name for name, opt in options.items() if name not in defaults and not opt.get("required"))
    assert undeclared == [], "declared options with neither a default nor required: true"
    disagreeing = sorted(
        name for name, opt in options.items() if "default" in opt and opt["default"] != defaults.get(name)
    )
    assert disagreeing == [], "argument_specs default differs from defaults/main.yml"
    assert all(opt.get("description") for opt in options.values())

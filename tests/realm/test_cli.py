"""`antenna realm check` and `antenna project add-member/remove-member` as sub-apps, end to end against the
replay of Keycloak's admin API (no Keycloak server runs here). The admin secret comes from the environment
and never appears in output.
"""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from gateway.realm.cli import SECRET_ENV, project_app, realm_app
from tests.realm.keycloak_replay import CLIENT_ID, CLIENT_SECRET, Replay

RESEARCHER = "3fa85f6457174562b3fc2c963f66afa6c1e2d4b5@myaccessid.org"


def antenna() -> typer.Typer:
    """The sub-apps mounted as the main CLI mounts them."""
    app = typer.Typer()
    app.add_typer(realm_app(), name="realm")
    app.add_typer(project_app(), name="project")
    return app


@pytest.fixture
def env(replay: Replay) -> dict[str, str]:
    return {"ANTENNA_KEYCLOAK_URL": replay.url, "ANTENNA_KEYCLOAK_ADMIN_CLIENT": CLIENT_ID, SECRET_ENV: CLIENT_SECRET}


def test_check_passes_on_a_compliant_realm(env: dict[str, str]) -> None:
    result = CliRunner().invoke(antenna(), ["realm", "check"], env=env)
    assert result.exit_code == 0, result.output
    assert "matches the identity contract" in result.output


def test_check_lists_differences_and_exits_1(env: dict[str, str], replay: Replay) -> None:
    replay.replies["GET /admin/realms/antenna/identity-provider/instances/myaccessid"]["trustEmail"] = True
    result = CliRunner().invoke(antenna(), ["realm", "check", "--json"], env=env)
    assert result.exit_code == 1
    assert json.loads(result.output) == [
        {"setting": "identity provider myaccessid: trustEmail", "expected": "False", "actual": "True"}
    ]


def test_check_without_the_secret_is_a_usage_error(env: dict[str, str]) -> None:
    result = CliRunner().invoke(antenna(), ["realm", "check"], env={**env, SECRET_ENV: ""})
    assert result.exit_code == 2
    assert SECRET_ENV in result.output


def test_wrong_secret_is_refused_and_never_printed(env: dict[str, str]) -> None:
    result = CliRunner().invoke(antenna(), ["realm", "check"], env={**env, SECRET_ENV: "wrong-secret-value"})
    assert result.exit_code == 3
    assert "refused the admin client's credentials" in result.output
    assert "wrong-secret-value" not in result.output


def test_add_then_remove_member(env: dict[str, str], replay: Replay) -> None:
    runner = CliRunner()
    added = runner.invoke(antenna(), ["project", "add-member", "antenna-pilot", RESEARCHER, "--pi"], env=env)
    assert added.exit_code == 0, added.output
    assert f"{RESEARCHER}: joined /projects/antenna-pilot/pi" in added.output
    removed = runner.invoke(antenna(), ["project", "remove-member", "antenna-pilot", RESEARCHER, "--json"], env=env)
    assert removed.exit_code == 0, removed.output
    assert json.loads(removed.output)["removed"] == ["/projects/antenna-pilot/pi", "/projects/antenna-pilot"]
    assert CLIENT_SECRET not in added.output + removed.output


def test_refusals_exit_3(env: dict[str, str]) -> None:
    result = CliRunner().invoke(antenna(), ["project", "add-member", "ai4belgium", RESEARCHER], env=env)
    assert result.exit_code == 3
    assert "entitlements" in result.output

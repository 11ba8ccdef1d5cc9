"""The researcher's client stands alone: importing it, asking for help and listing jobs load nothing of the
server or the operator tools, and ``--help`` does not even load the HTTP client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.process import REPO, client_only

SERVER_AND_OPERATOR = (
    "fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "psycopg", "pydantic_settings", "hvac", "keycloak",
    "asyncssh", "prometheus_client", "limits", "structlog", "pulumi", "ansible", "ansible_runner", "yaml", "jwt",
    "matplotlib", "gateway.app", "gateway.runtime", "gateway.settings", "gateway.server_cli", "gateway.deploy",
    "gateway.realm", "gateway.secrets", "gateway.jobs.service", "gateway.jobs.models", "gateway.ledger",
)  # fmt: skip

PROBE = """
import sys
from gateway.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
import json
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def loaded_by(*args: str, env: dict[str, str] | None = None) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
        env=env,
    )  # fmt: skip
    return set(json.loads(result.stderr.strip().splitlines()[-1]))


def offending(modules: set[str]) -> set[str]:
    return {m for m in modules if any(m == top or m.startswith(top + ".") for top in SERVER_AND_OPERATOR)}


def test_help_loads_neither_server_nor_operator_nor_http(tmp_path: Path) -> None:
    modules = loaded_by("--help", env=client_only(tmp_path))
    assert offending(modules) == set()
    assert "httpx" not in modules


def test_a_command_that_calls_the_gateway_loads_only_the_client() -> None:
    modules = loaded_by("jobs", "--url", "http://127.0.0.1:9")  # unreachable: the call fails, the imports happen
    assert "httpx" in modules
    assert offending(modules) == set()


def test_the_distribution_keeps_server_and_operator_out_of_the_base_install() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {dep.split(">")[0].split("[")[0].split("=")[0] for dep in project["dependencies"]}
    assert base == {"httpx", "typer", "rich"}
    assert set(project["optional-dependencies"]) == {"plot", "server", "operator"}
    assert project["scripts"]["antenna"] == "gateway.cli.main:main"


def test_a_partial_install_names_the_missing_extra_instead_of_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from gateway.cli import extensions
    from gateway.cli.main import app

    broken = extensions.Extension("operator", "json", "tests.cli.no_such_module:app", "present but incomplete")
    monkeypatch.setitem(extensions.EXTENSIONS, "broken", broken)
    assert CliRunner().invoke(app, ["--help"]).exit_code == 0  # the other commands are listed
    result = CliRunner().invoke(app, ["broken"])
    assert result.exit_code == 2
    assert "install antenna-gateway[operator]" in result.output

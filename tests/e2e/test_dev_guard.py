"""Development mode cannot be turned on by a production configuration: not by a key in the YAML file, not
by an environment variable, and ``create_app(settings)`` without a DevMode refuses what only it may use
(an ``http://`` issuer, the ``local`` connector). Each refusal names the key.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.app import create_app
from gateway.cli.main import app as antenna
from gateway.devmode import dev_site
from gateway.errors import ConfigurationError
from gateway.settings import load_settings

HTTPS_ISSUER = "https://keycloak.antenna.example/realms/antenna"


def serve(config: Path, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(antenna, ["serve", "--config", str(config)], env={"COLUMNS": "300", **env})
    return result.exit_code, result.output


def production_yaml(tmp_path: Path, extra: str = "", issuer: str = HTTPS_ISSUER) -> Path:
    path = tmp_path / "antenna.yaml"
    path.write_text(f"database: {{url: 'sqlite:///{tmp_path / 'antenna.db'}'}}\noidc: {{issuer: '{issuer}'}}\n{extra}")
    return path


@pytest.mark.parametrize("key", ["dev: true", "dev_mode: true", "development: {enabled: true}"])
def test_a_dev_key_in_the_file_is_refused(tmp_path: Path, key: str) -> None:
    code, output = serve(production_yaml(tmp_path, key + "\n"))
    assert code == 1
    assert "refusing to start" in output
    assert f"{key.split(':', maxsplit=1)[0]}:" in output


@pytest.mark.parametrize("variable", ["ANTENNA_DEV", "ANTENNA_DEV_MODE"])
def test_a_dev_variable_is_refused(tmp_path: Path, variable: str) -> None:
    code, output = serve(production_yaml(tmp_path), **{variable: "1"})
    assert code == 1
    assert f"{variable}: development mode cannot be enabled by configuration" in output
    assert not (tmp_path / "antenna.db").exists()  # refused before anything was created


def test_serve_refuses_an_http_issuer(tmp_path: Path) -> None:
    code, output = serve(production_yaml(tmp_path, issuer="http://127.0.0.1:8000/dev-issuer"))
    assert code == 1
    assert "oidc.issuer: must be an https:// URL outside development mode" in output


def test_create_app_without_dev_mode_refuses_an_http_issuer(tmp_path: Path) -> None:
    settings = load_settings(
        None, database={"url": f"sqlite:///{tmp_path / 'a.db'}"}, oidc={"issuer": "http://127.0.0.1:8000/dev-issuer"}
    )
    with pytest.raises(ConfigurationError, match=r"^oidc\.issuer: "):
        create_app(settings)


def test_create_app_without_dev_mode_refuses_the_local_connector(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        database={"url": f"sqlite:///{tmp_path / 'a.db'}"},
        oidc={"issuer": HTTPS_ISSUER},
        sites={"local": dev_site()},
    )
    with pytest.raises(ConfigurationError, match=r"^sites\.local\.connector: 'local' is not a production connector"):
        create_app(settings)

"""``antenna config check FILE``: the shipped example passes; a broken file fails and names the offending key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gateway.cli.main import app as antenna
from gateway.settings import load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "sites.example.yaml"

PARTITION = """
      small:
        billing: {kind: whole_node, unit: node-hours, rate_per_node: 1}
        max_time_minutes: 60
        cores_per_node: 128
        memory_gb_per_node: 256"""


NO_TIME_LIMIT = """
      small:
        billing: {kind: whole_node, unit: node-hours, rate_per_node: 1}
        cores_per_node: 1
        memory_gb_per_node: 1"""


def site(
    connector: str = "slurmrestd",
    options: str = "{url: 'https://slurm.example:6820', status_account: status}",
    partition: str = "",
) -> str:
    body = f"    connector: {connector}\n    options: {options}\n    partitions:{partition or PARTITION}\n"
    return "sites:\n  lumi:\n" + body


def check(path: Path, *extra: str, env: dict[str, str | None] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(antenna, ["config", "check", str(path), *extra], env={"COLUMNS": "300", **(env or {})})
    return result.exit_code, result.output


def test_the_shipped_example_is_refused_only_for_the_connectors_this_release_lacks() -> None:
    # The example describes how the real sites are reached; serve would refuse firecrest and unicore today.
    code, output = check(EXAMPLE)
    assert code != 0
    problems = [line for line in output.splitlines()[1:] if line.strip()]
    assert problems == [
        "sites.lumi.connector: 'firecrest' is not available in this release (available: local, slurmrestd, ssh)",
        "sites.jupiter.connector: 'unicore' is not available in this release (available: local, slurmrestd, ssh)",
    ]


def test_the_shipped_example_passes_once_its_sites_use_available_connectors(tmp_path: Path) -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    for name in ("lumi", "jupiter"):
        options = {"host": f"login.{name}.example", "known_hosts": "known_hosts", "status_account": "status"}
        document["sites"][name].update(connector="ssh", options=options)
    path = tmp_path / "antenna.yaml"
    path.write_text(yaml.safe_dump(document))
    code, output = check(path)
    assert code == 0, output
    assert "ok (3 sites)" in output


def test_connector_options_are_checked_as_serve_would(tmp_path: Path) -> None:
    path = tmp_path / "antenna.yaml"
    path.write_text(site(connector="ssh", options="{port: 22}"))
    code, output = check(path)
    assert code != 0
    assert "sites.lumi.options.host:" in output, output


BROKEN = {
    "unknown-top-level-key": ("dev: true\n" + site(), "dev:"),
    "http-issuer": ("oidc: {issuer: 'http://keycloak.example/realms/antenna'}\n" + site(), "oidc.issuer:"),
    "acceptance-myaccessid": ("oidc: {issuer: 'https://proxy.acc.myaccessid.org'}\n" + site(), "oidc.issuer:"),
    "unknown-connector": (site(connector="warp"), "sites.lumi.connector:"),
    "local-connector-in-production": (site(connector="local"), "sites.lumi.connector:"),
    "secret-in-the-file": (site(options="{client_secret: s3cr3t-value}"), "sites.lumi.options.client_secret:"),
    "placeholder-value": (site(options="{url: changeme}"), "sites.lumi.options.url:"),
    "placeholder-outside-the-sites": ("vault: {role_id: changeme}\n" + site(), "vault.role_id:"),
    "placeholder-in-nested-options": (
        site(options="{url: 'https://s.example', status_account: s, output_ssh: {host: '<login node>'}}"),
        "sites.lumi.options.output_ssh.host:",
    ),
    "unsupported-slurmrestd-api-version": (
        site(options="{url: 'https://s.example', status_account: s, api_version: v0.0.40}"),
        "sites.lumi.options.api_version: v0.0.40 is not supported",
    ),
    "malformed-host-key": (
        site(connector="ssh", options="{host: login.example, status_account: s, host_keys: ['ssh-ed25519 AAAA']}"),
        "sites.lumi.options.host_keys.0: not an OpenSSH public key",
    ),
    "secret-in-a-list-under-a-secret-key": (
        site(options="{url: 'https://s.example', status_account: s, private_keys: [s3cr3t-value]}"),
        "sites.lumi.options.private_keys.0:",
    ),
    "secret-in-nested-options": (
        site(options="{url: 'https://s.example', status_account: s, output_ssh: {private_key: s3cr3t-value}}"),
        "sites.lumi.options.output_ssh.private_key:",
    ),
    "password-in-database-url": (
        "database: {url: 'postgresql+psycopg://gw:hunter2@db/antenna'}\n" + site(),
        "database.url:",
    ),
    "partition-without-time-limit": (site(partition=NO_TIME_LIMIT), "sites.lumi.partitions.small.max_time_minutes:"),
    "wrong-type": ("limits: {script_max_bytes: lots}\n" + site(), "limits.script_max_bytes:"),
    "markup-in-a-value-shown-as-written": (site(connector="'[bold]warp'"), "'[bold]warp'"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_file_fails_naming_the_key(tmp_path: Path, name: str) -> None:
    text, key = BROKEN[name]
    path = tmp_path / "antenna.yaml"
    path.write_text(text)
    code, output = check(path)
    assert code != 0
    assert "invalid" in output
    assert key in output, output
    assert "hunter2" not in output  # a refused secret is not echoed back
    assert "s3cr3t-value" not in output


def test_a_file_that_is_not_yaml_fails_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "antenna.yaml"
    path.write_text("sites: [unclosed\n")
    code, output = check(path)
    assert code != 0
    assert "antenna.yaml" in output


@pytest.mark.parametrize("variable", ["ANTENNA_DEV", "ANTENNA_DEV_MODE", "antenna_development"])
def test_a_dev_mode_variable_is_refused_naming_it(variable: str) -> None:
    code, output = check(EXAMPLE, env={variable: "true"})
    assert code != 0
    assert f"{variable}: development mode cannot be enabled by configuration" in output


def test_json_lists_every_problem_or_the_sites(tmp_path: Path) -> None:
    code, output = check(EXAMPLE, "--json")
    refused = json.loads(output)
    assert (code, refused["ok"], len(refused["problems"])) == (3, False, 2)
    path = tmp_path / "antenna.yaml"
    path.write_text(site())
    code, output = check(path, "--json")
    assert (code, json.loads(output)) == (0, {"file": str(path), "ok": True, "sites": ["lumi"]})


def test_antenna_variables_override_single_keys_of_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "antenna.yaml"
    path.write_text(
        "oidc: {issuer: 'https://keycloak.example/realms/antenna', audience: antenna-gw}\n"
        "limits: {script_max_bytes: 4096}\n" + site()
    )
    monkeypatch.setenv("ANTENNA_OIDC__ISSUER", "https://other.example/realms/antenna")
    monkeypatch.setenv("ANTENNA_LIMITS__SUBMISSIONS_PER_MINUTE", "7")
    settings = load_settings(path)
    assert settings.oidc.issuer == "https://other.example/realms/antenna"  # the variable wins over the file
    assert settings.oidc.audience == "antenna-gw"  # the rest of the section still comes from the file
    assert (settings.limits.script_max_bytes, settings.limits.submissions_per_minute) == (4096, 7)


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("ANTENNA_OIDC__ISSUER", "http://keycloak.example/realms/antenna", "oidc.issuer:"),
        ("ANTENNA_LIMITS__SCRIPT_MAX_BYTES", "lots", "limits.script_max_bytes:"),
    ],
    ids=["http-issuer-from-the-environment", "wrong-type-from-the-environment"],
)
def test_a_bad_override_is_refused_naming_the_key(tmp_path: Path, variable: str, value: str, key: str) -> None:
    path = tmp_path / "antenna.yaml"
    path.write_text(site())
    code, output = check(path, env={variable: value})
    assert code != 0
    assert key in output, output


def test_identifiers_that_read_like_secrets_are_not_placeholders(tmp_path: Path) -> None:
    # Vault's default KV mount is `secret`; key_field names a field of the site's Vault secret.
    path = tmp_path / "antenna.yaml"
    options = "{url: 'https://slurm.example:6820', status_account: status, key_field: secret}"
    path.write_text("vault: {kv_mount: secret}\n" + site(options=options))
    code, output = check(path)
    assert code == 0, output

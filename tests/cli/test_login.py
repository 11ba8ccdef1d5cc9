"""``antenna login``: the device authorization grant against an issuer the tests run (discovery, device
endpoint, token endpoint that answers ``authorization_pending`` before it issues), tokens kept in a profile
readable by its owner only, refreshed before they expire, and a clear exit code when the session is over.

Keycloak cannot run here, so its device endpoint is played by tests/cli/device_issuer.py, which follows
RFC 8628 and Keycloak's endpoint layout; the gateway verifies the tokens it issues through its JWKS.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from gateway.cli.client import device_login
from gateway.cli.main import app as antenna
from tests.api.harness import ALICE, build_app, serve
from tests.cli.device_issuer import DeviceFlowIssuer

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass
class Setup:
    issuer: DeviceFlowIssuer
    url: str
    home: Path

    def run(self, *args: str) -> Result:
        env = {"ANTENNA_CLI_HOME": str(self.home), "ANTENNA_URL": self.url, "ANTENNA_TOKEN": None, "COLUMNS": "200"}
        return CliRunner().invoke(antenna, list(args), env=env)

    @property
    def profile(self) -> Path:
        return self.home / "profile.json"


def _setup(tmp_path: Path, **issuer_options: int | bool) -> Iterator[Setup]:
    issuer = DeviceFlowIssuer(person=ALICE, projects={"demo": "member"}, **issuer_options).start()  # type: ignore[arg-type]
    try:
        with serve(build_app(tmp_path / "gateway", issuer.issuer)) as url:
            yield Setup(issuer, url, tmp_path / "cli")
    finally:
        issuer.close()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    yield from _setup(tmp_path)


@pytest.fixture
def short_lived(tmp_path: Path) -> Iterator[Setup]:
    # Access tokens living 10 s: inside the CLI's 30 s margin, so the next call refreshes first.
    yield from _setup(tmp_path, access_lifetime=10)


def test_login_polls_until_authorised_and_keeps_tokens_owner_only(setup: Setup) -> None:
    result = setup.run("login")
    assert result.exit_code == 0, result.output
    assert setup.issuer.user_code in result.stdout
    assert f"{setup.issuer.issuer}/device" in result.stdout
    assert setup.issuer.grants == [DEVICE_GRANT] * 4  # three authorization_pending answers, then tokens
    assert stat.S_IMODE(setup.profile.stat().st_mode) == 0o600
    assert stat.S_IMODE(setup.home.stat().st_mode) == 0o700
    profile = json.loads(setup.profile.read_text())
    assert profile["access_token"] == setup.issuer.issued[0]
    assert profile["refresh_token"] in setup.issuer.refresh_tokens
    assert (profile["issuer"], profile["client_id"]) == (setup.issuer.issuer, "antenna-cli")
    assert setup.issuer.issued[0] not in result.output  # the token is stored, never printed

    jobs = setup.run("jobs", "--json")  # no ANTENNA_TOKEN: the stored profile is what signs this in
    assert jobs.exit_code == 0, jobs.output
    assert json.loads(jobs.stdout) == {"jobs": [], "next_cursor": None}
    assert setup.issuer.grants.count("refresh_token") == 0  # a fresh token is not refreshed


def test_login_json_keeps_stdout_for_the_result_and_the_prompt_on_stderr(setup: Setup) -> None:
    result = setup.run("login", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document == {
        "signed_in": True,
        "url": setup.url,
        "person": document["person"],
        "profile": str(setup.profile),
    }
    assert document["person"].endswith("@myaccessid.org")
    assert setup.issuer.user_code in result.stderr
    assert setup.issuer.issued[0] not in result.output


def test_tokens_about_to_expire_are_refreshed_and_stored_again(short_lived: Setup) -> None:
    assert short_lived.run("login").exit_code == 0
    first = json.loads(short_lived.profile.read_text())
    jobs = short_lived.run("jobs", "--json")
    assert jobs.exit_code == 0, jobs.output
    assert short_lived.issuer.grants[-1] == "refresh_token"
    refreshed = json.loads(short_lived.profile.read_text())
    assert refreshed["access_token"] == short_lived.issuer.issued[-1] != first["access_token"]
    assert refreshed["refresh_token"] != first["refresh_token"]  # rotated
    assert stat.S_IMODE(short_lived.profile.stat().st_mode) == 0o600


def test_a_refused_refresh_exits_4_and_asks_to_sign_in_again(short_lived: Setup) -> None:
    assert short_lived.run("login").exit_code == 0
    short_lived.issuer.revoke_refresh_tokens()
    result = short_lived.run("jobs")
    assert result.exit_code == 4, result.output
    assert "antenna login" in result.stderr


def test_a_denied_sign_in_exits_3_and_stores_nothing(tmp_path: Path) -> None:
    for denied in _setup(tmp_path, deny=True):
        result = denied.run("login")
        assert result.exit_code == 3, result.output
        assert "access_denied" in result.stderr
        assert not denied.profile.exists()


def test_slow_down_makes_the_client_poll_less_often(tmp_path: Path) -> None:
    for slowed in _setup(tmp_path, slow_downs=1, pending_polls=1):
        waits: list[float] = []
        profile = device_login(slowed.url, show=lambda link, code: None, sleep=waits.append)
        assert waits == [0, 5, 5]  # RFC 8628 §3.5: slow_down adds 5 seconds to the interval from then on
        assert profile.access_token == slowed.issuer.issued[-1]

"""A live gateway for the CLI: uvicorn on a loopback port in a thread, its forwarder and status sync running
as in production (short polls), tokens from the loopback IdP, and the CLI run in process by typer's CliRunner.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from gateway.cli.main import app as antenna
from tests.api.harness import ACCOUNTS, GRANT, OPERATOR, PEOPLE, QUOTA_ADMIN, SITE, build_app, serve
from tests.support.idp import LoopbackIdP

LIVE_SECTIONS: dict[str, dict[str, Any]] = {
    "forwarder": {"enabled": True, "poll_seconds": 0.1},
    "site": {"status_interval_seconds": 0.2},
}


@dataclass
class Live:
    url: str
    idp: LoopbackIdP
    home: Path  # ANTENNA_CLI_HOME: where the CLI keeps its profile

    def token(self, person: str, **claims: Any) -> str:
        projects, roles = PEOPLE[person]
        groups = [f"/projects/{p}" for p in projects] + [f"/projects/{p}/pi" for p, r in projects.items() if r == "pi"]
        defaults = {"sub": person, "myaccessid_cuid": person, "groups": groups, "realm_access": {"roles": roles}}
        return self.idp.token(**{**defaults, **claims})

    def env(self, person: str | None) -> dict[str, str | None]:
        return {
            "ANTENNA_CLI_HOME": str(self.home),
            "ANTENNA_URL": self.url,
            "ANTENNA_TOKEN": self.token(person) if person else None,
            "ANTENNA_CONFIG": None,
            "COLUMNS": "200",  # tables on one line each, whatever the terminal
        }

    def run(self, *args: str, person: str | None, token: str | None = None) -> Result:
        env = self.env(person)
        if token is not None:
            env["ANTENNA_TOKEN"] = token
        return CliRunner().invoke(antenna, list(args), env=env)

    def json(self, *args: str, person: str) -> Any:
        result = self.run(*args, "--json", person=person)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture
def live(tmp_path: Path, test_idp: LoopbackIdP) -> Iterator[Live]:
    app = build_app(tmp_path / "gateway", test_idp.issuer, **LIVE_SECTIONS)
    with serve(app) as url:
        gateway = Live(url, test_idp, tmp_path / "cli")
        seed_with_the_cli(gateway, app.state.runtime.clock.now().date().isoformat())
        yield gateway


def seed_with_the_cli(live: Live, today: str) -> None:
    """Allocations and site accounts, set through `antenna admin` itself."""
    for project in ("demo", "other"):
        for unit, amount in GRANT.items():
            result = live.run(
                "admin", "allocate", "--project", project, "--site", SITE, "--unit", unit, "--amount", amount,
                "--start", f"{today}T00:00:00Z", "--end", "2099-01-01T00:00:00Z",
                person=QUOTA_ADMIN,
            )  # fmt: skip
            assert result.exit_code == 0, result.output
    for person, account in ACCOUNTS.items():
        args = ["admin", "map-account", "--person", person, "--site", SITE, "--account", account]
        result = live.run(*args, person=OPERATOR)
        assert result.exit_code == 0, result.output

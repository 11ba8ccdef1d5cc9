"""``antenna dev`` as a person starts it, and the client signing in to it as each demo person through the
device authorization grant (the code confirmed on the issuer's page, as a browser would post it); then the
README's commands as each of them, with the answers the README promises.

The gateway runs as its own process (``python -m gateway.cli dev``); the client commands too.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.devmode import DEMO_PEOPLE, OPERATOR, OUTSIDER, PI, QUOTA_ADMIN, RESEARCHER
from tests.cli.process import ARGV, antenna, cli_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("antenna-dev")
    port = free_port()
    env = cli_env({"ANTENNA_CLI_HOME": str(folder / "dev-cli")})
    process = subprocess.Popen(
        [*ARGV, "dev", "--data-dir", str(folder / "data"), "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("antenna dev did not become ready")
        yield url
    finally:
        process.terminate()
        banner = process.communicate(timeout=30)[0]
    assert "You are signed in as alice@demo.antenna.dev" in banner
    assert all(person.person in banner for person in DEMO_PEOPLE)


def login(url: str, person: str, home: Path) -> None:
    """`antenna login --url`, and the person confirming the code it shows on the issuer's page."""
    env = cli_env({"ANTENNA_CLI_HOME": str(home), "ANTENNA_TOKEN": None, "COLUMNS": "200"})
    process = subprocess.Popen([*ARGV, "login", "--url", url], env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    prompt = process.stdout.readline()
    match = re.search(r"Open (\S+) and confirm the code (\S+)", prompt)
    assert match, prompt
    page = httpx.get(match.group(1))
    assert match.group(2) in page.text  # the code filled in
    assert person in page.text  # the people offered
    confirmed = httpx.post(f"{url}/dev-issuer/device", data={"user_code": match.group(2), "person": person})
    assert confirmed.status_code == 200, confirmed.text
    rest = process.communicate(timeout=30)[0]
    assert process.returncode == 0, rest
    assert f"signed in as {person}" in rest


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A command as the person signed in under ``home`` (its profile, not a token or URL from this process)."""
    signed_in: dict[str, str | None] = {"ANTENNA_CLI_HOME": str(home), "ANTENNA_TOKEN": None, "ANTENNA_URL": None}
    return antenna(*args, env={**signed_in, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def homes(dev: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    signed_in = {}
    for who in DEMO_PEOPLE:
        home = tmp_path_factory.mktemp(who.person.split("@")[0])
        login(dev, who.person, home)
        signed_in[who.person] = home
    return signed_in


def test_each_demo_person_signs_in_and_the_gateway_knows_their_roles(homes: dict[str, Path]) -> None:
    for who in DEMO_PEOPLE:
        me = json.loads(cli(homes[who.person], "whoami", "--json").stdout)
        assert me["person"] == who.person
        assert {m["project"]: m["role"] for m in me["projects"]} == {p: str(r) for p, r in who.projects.items()}
        assert set(me["roles"]) >= set(who.roles)


def test_the_readme_commands_as_each_person(homes: dict[str, Path], tmp_path: Path) -> None:
    script = tmp_path / "train.sh"
    script.write_text("#!/bin/bash\necho training\necho oops >&2\nexit 3\n")
    alice, bob, pat, quinn, oscar = (homes[p.person] for p in (RESEARCHER, OUTSIDER, PI, QUOTA_ADMIN, OPERATOR))

    price = json.loads(cli(alice, "estimate", "--site", "local", "--project", "demo", str(script), "--json").stdout)
    assert price["enough"] is True
    failed = cli(alice, "submit", "--site", "local", "--project", "demo", str(script), "--wait")
    assert failed.returncode == 1  # the job exits 3: it failed, and the hint names stderr
    assert "with exit code 3" in failed.stdout
    assert "--stream stderr" in failed.stderr
    job_id = re.search(r"job (\S+) failed", failed.stdout).group(1)  # type: ignore[union-attr]
    assert cli(alice, "output", job_id[:6], "--stream", "stderr").stdout == "oops\n"
    assert cli(bob, "job", job_id).returncode == 3  # another project's job: not found for Bob
    assert job_id[:8] in cli(pat, "jobs", "--project", "demo").stdout  # the PI sees the member's job
    assert cli(bob, "balance", "--project", "demo").returncode == 3
    assert cli(alice, "balance", "--project", "demo").returncode == 0
    usage = json.loads(cli(pat, "usage", "--project", "demo", "--json").stdout)
    assert usage["project"] == "demo"
    assert cli(alice, "usage", "--project", "demo", "--person", PI.person).returncode == 3  # members: their own

    grant = ["admin", "allocate", "--project", "third", "--site", "local", "--unit", "gpu-hours", "--amount", "50",
             "--start", "2026-01-01", "--end", "2099-01-01", "--reason", "test"]  # fmt: skip
    assert cli(alice, *grant).returncode == 3
    assert cli(quinn, *grant).returncode == 0
    assert cli(alice, "admin", "reconcile", "--site", "local", "--days", "1").returncode == 3
    reconciled = cli(oscar, "admin", "reconcile", "--site", "local", "--since", "2026-01-01", "--json")
    assert reconciled.returncode in (0, 1), reconciled.stderr  # 1: differences found, listed
    assert "summary" in json.loads(reconciled.stdout)
    assert "local" in cli(alice, "sites").stdout
    assert cli(alice, "logout").returncode == 0
    assert cli(alice, "jobs").returncode == 4

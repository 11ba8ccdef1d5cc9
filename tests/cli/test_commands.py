"""The ``antenna`` commands against a live gateway: what they print, their ``--json`` output, and their exit
codes (0 ok, 1 the job failed, 3 refused by the gateway, 4 not signed in).
"""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal
from pathlib import Path

import pytest

from tests.api.harness import ALICE, BOB, NOMAD, OPERATOR, PAT, QUOTA_ADMIN
from tests.cli.conftest import Live


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "train.sh"
    path.write_text("#!/bin/bash\necho training\nsleep 1.2\necho done\n")
    return path


def submit_args(script: Path, *extra: str) -> list[str]:
    return ["submit", "--site", "local", "--project", "demo", "--partition", "small", str(script), *extra]


def test_submit_then_follow_the_job_through_jobs_job_and_cancel(live: Live, script: Path) -> None:
    job = live.json(*submit_args(script), person=ALICE)
    assert (job["state"], job["project"], job["name"]) == ("accepted", "demo", "train")
    assert job["reserved"] == "0.166667"  # ten minutes (the CLI's default limit) of one core

    listed = live.json("jobs", person=ALICE)
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]
    shown = live.json("job", job["id"], person=ALICE)
    assert shown["history"][0]["state"] == "accepted"

    table = live.run("jobs", person=ALICE)
    assert table.exit_code == 0
    assert job["id"][:8] in table.stdout
    assert "local/small" in table.stdout

    cancelled = live.json("cancel", job["id"], person=PAT)
    assert cancelled["id"] == job["id"]
    final = live.json("job", job["id"], person=ALICE)
    assert final["state"] == "cancelled" or "cancel requested" in str(final["history"])


def test_submit_wait_shows_the_charge_and_balance_shows_it_too(live: Live, script: Path) -> None:
    result = live.run(*submit_args(script, "--wait"), person=ALICE)
    assert result.exit_code == 0, result.output
    match = re.search(r"job (\S+) completed: charged (\S+) of (\S+) cpu-core-hours reserved", result.stdout)
    assert match, result.stdout
    charged = match.group(2)
    assert Decimal(charged) > 0
    balance = live.json("balance", "--project", "demo", person=BOB)
    cpu = next(b for b in balance["balances"] if b["unit"] == "cpu-core-hours")
    assert (cpu["charged"], cpu["reserved"]) == (charged, "0.000000")
    table = live.run("balance", "--project", "demo", person=BOB)
    assert table.exit_code == 0
    assert charged in table.stdout


def test_submit_wait_of_a_failing_job_exits_1(live: Live, tmp_path: Path) -> None:
    failing = tmp_path / "broken.sh"
    failing.write_text("#!/bin/bash\necho oops >&2\nexit 7\n")
    result = live.run(*submit_args(failing, "--wait", "--json"), person=ALICE)
    assert result.exit_code == 1, result.output
    assert '"state": "failed"' in result.stdout


def test_quota_exceeded_exits_3_and_says_what_is_left(live: Live, script: Path) -> None:
    result = live.run(*submit_args(script, "--cores", "128", "--time-limit", "60"), person=ALICE)
    assert result.exit_code == 3, result.output
    assert "available 100.000000 cpu-core-hours, the job costs 128" in result.stderr


@pytest.mark.parametrize(
    ("args", "person", "says"),
    [
        (["--time-limit", "02:00:00"], ALICE, "time_limit"),
        (["--env", "LD_PRELOAD=/tmp/x.so"], ALICE, "environment.LD_PRELOAD"),
        (["--workdir", "../elsewhere"], ALICE, "working_directory"),
        ([], NOMAD, "no account mapped"),
    ],
    ids=["time-limit", "environment", "working-directory", "no-account"],
)
def test_refusals_exit_3_naming_the_field(live: Live, script: Path, args: list[str], person: str, says: str) -> None:
    result = live.run(*submit_args(script, *args), person=person)
    assert result.exit_code == 3, result.output
    assert says in result.stderr


def test_not_signed_in_exits_4(live: Live, script: Path) -> None:
    result = live.run("balance", "--project", "demo", person=None)
    assert result.exit_code == 4, result.output
    assert "antenna login" in result.stderr


def test_an_expired_token_exits_4(live: Live) -> None:
    expired = live.token(ALICE, iat=1_600_000_000, exp=1_600_000_300)
    result = live.run("jobs", person=None, token=expired)
    assert result.exit_code == 4, result.output


def test_usage_as_json_and_csv(live: Live, script: Path) -> None:
    assert live.run(*submit_args(script, "--wait"), person=ALICE).exit_code == 0
    usage = live.json("usage", "--project", "demo", person=PAT)
    (line,) = usage["lines"]
    assert (line["person"], line["site"], line["kind"]) == (ALICE, "local", "charge")
    assert usage["totals"] == {"local/cpu-core-hours": line["amount"]}
    result = live.run("usage", "--project", "demo", "--csv", person=PAT)
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["person"], r["amount"]) for r in rows] == [(ALICE, line["amount"])]
    assert live.json("usage", "--project", "demo", person=BOB)["lines"] == []  # members see their own only


def test_admin_allocate_needs_the_quota_admin_role(live: Live) -> None:
    args = ["admin", "allocate", "--project", "newproj", "--site", "local", "--unit", "gpu-hours", "--amount", "42"]
    period = ["--start", "2026-01-01T00:00:00Z", "--end", "2099-01-01T00:00:00Z"]
    refused = live.run(*args, *period, person=PAT)
    assert refused.exit_code == 3, refused.output
    granted = live.json(*args, *period, person=QUOTA_ADMIN)
    assert (granted["granted"], granted["unit"]) == ("42.000000", "gpu-hours")
    human = live.run(*args, *period, person=QUOTA_ADMIN)
    assert "newproj at local: granted 42.000000 gpu-hours" in human.stdout


def test_admin_map_account_needs_the_operator_role(live: Live, script: Path) -> None:
    args = ["admin", "map-account", "--person", NOMAD, "--site", "local", "--account", "nomad"]
    assert live.run(*args, person=QUOTA_ADMIN).exit_code == 3
    assert live.run(*submit_args(script), person=NOMAD).exit_code == 3
    mapped = live.json(*args, person=OPERATOR)
    assert mapped == {"person": NOMAD, "site": "local", "account": "nomad"}
    assert live.run(*submit_args(script), person=NOMAD).exit_code == 0


def test_output_as_json(live: Live, script: Path) -> None:
    assert live.run(*submit_args(script, "--wait"), person=ALICE).exit_code == 0
    (job,) = live.json("jobs", person=ALICE)["jobs"]
    shown = live.json("output", job["id"], person=ALICE)
    assert shown == {"job_id": job["id"], "stream": "stdout", "text": "training\ndone\n"}
    assert live.run("output", job["id"], person=ALICE).stdout == "training\ndone\n"

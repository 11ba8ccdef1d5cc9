"""The client over a corpus of bad invocations and files, run as a person runs it (the console script's
``main`` in a fresh process): each ends with one line on stderr, the documented exit code, no traceback.

Exit codes (README): 1 failed (unreachable, a server error), 2 a usage error, 3 refused, 4 not signed in.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.api.harness import ALICE
from tests.cli.conftest import Live
from tests.cli.process import ARGV, antenna, client_only


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    said = [line for line in result.stderr.splitlines() if line.strip() and "sign in again" not in line]
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert len(said) == 1, result.stderr
    assert words in said[0], said[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert "unexpected" not in said[0]  # the last-resort message: every case here has its own


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "train.sh"
    good.write_text("#!/bin/bash\necho hi\n")
    latin1 = tmp_path / "latin1.sh"
    latin1.write_bytes("#!/bin/bash\necho 'café'\n".encode("latin-1"))
    folder = tmp_path / "folder.sh"
    folder.mkdir()
    return {"good": good, "latin1": latin1, "folder": folder, "missing": tmp_path / "missing.sh"}


def submit(script: Path, *extra: str) -> list[str]:
    return ["submit", "--site", "local", "--project", "demo", str(script), *extra]


def test_bad_invocations_and_files(live: Live, files: dict[str, Path], tmp_path: Path) -> None:
    env = live.env(ALICE)
    cases = [
        (submit(files["good"], "--env", "FOO"), 2, "give NAME=VALUE"),
        (submit(files["latin1"]), 2, "is not UTF-8 text"),
        (submit(files["missing"]), 2, "does not exist"),
        (submit(files["folder"]), 2, "is a directory"),
        (["usage", "--project", "demo", "--plot", str(tmp_path / "x.xyz")], 2, "cannot draw a .xyz file"),
        (["usage", "--project", "demo", "--plot", str(tmp_path / "missing/dir/u.png")], 2, "no folder"),
        (["usage", "--project", "demo", "--csv", "--json"], 2, "leave out --json"),
        (["job", "not-an-id"], 2, "is not a job id"),
        (["job", "abcdef12"], 3, "no job of yours starts with abcdef12"),
        (["output", "abcdef12", "--stream", "stdlog"], 2, "stdout or stderr"),
        (["admin", "resolve", "abcdef12", "--reason", "x"], 2, "give --charge AMOUNT or --void"),
        (["admin", "reconcile", "--site", "local", "--since", "last week"], 2, "give an ISO date"),
        (["no-such-command"], 2, "No such command"),
        (submit(files["good"], "--partition", "huge"), 3, "no partition 'huge'"),
        (["balance", "--project", "other"], 3, "no project other"),
    ]
    for args, code, words in cases:
        assert_one_line(antenna(*args, env=env), code, words)


def test_unreachable_gateway_expired_token_and_damaged_profile(live: Live, tmp_path: Path) -> None:
    env = live.env(ALICE)
    assert_one_line(antenna("jobs", env={**env, "ANTENNA_URL": "http://127.0.0.1:9"}), 1, "cannot reach the gateway")
    expired = live.token(ALICE, exp=1_000_000_000)
    result = antenna("jobs", env={**env, "ANTENNA_TOKEN": expired})
    assert_one_line(result, 4, "the bearer token is missing or invalid")
    assert "sign in again: antenna login" in result.stderr
    home = tmp_path / "damaged"
    home.mkdir()
    (home / "profile.json").write_text("{not json")
    assert_one_line(antenna("jobs", env={**env, "ANTENNA_TOKEN": None, "ANTENNA_CLI_HOME": str(home)}), 4, "damaged")
    # ... and `antenna login`, the cure the message names, still runs (here against a gateway it cannot reach).
    login = antenna("login", env={**env, "ANTENNA_URL": None, "ANTENNA_CLI_HOME": str(home)}, timeout=60)
    assert_one_line(login, 1, "cannot complete the sign-in")


@pytest.fixture
def broken_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(500)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>Internal Server Error</html>")

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_server_error_is_one_line_and_exit_1(live: Live, broken_server: str) -> None:
    result = antenna("jobs", env={**live.env(ALICE), "ANTENNA_URL": broken_server})
    assert_one_line(result, 1, "Internal Server Error")


def test_a_plot_named_without_extension_is_written_where_it_says(live: Live, tmp_path: Path) -> None:
    result = antenna("usage", "--project", "demo", "--plot", "usage", env=live.env(ALICE), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "usage.png").exists()
    assert "plot written to usage.png" in result.stdout


def test_the_server_commands_say_what_to_install_when_missing(tmp_path: Path) -> None:
    full = client_only(tmp_path)
    for command, extra in (("serve", "server"), ("deploy", "operator"), ("vault", "operator")):
        result = subprocess.run(
            [*ARGV, command, "--stack", "prod"], env=full, capture_output=True,
            text=True, timeout=60, check=False,
        )  # fmt: skip
        assert_one_line(result, 2, f"install antenna-gateway[{extra}]")
    listed = subprocess.run([*ARGV, "--help"], env=full, capture_output=True, text=True, check=False)
    assert listed.returncode == 0
    commands = listed.stdout.split("Commands")[1]
    assert re.search(r"^ +submit\s", commands, re.MULTILINE)
    assert not re.search(r"^ +(serve|dev|deploy|vault)\s", commands, re.MULTILINE)

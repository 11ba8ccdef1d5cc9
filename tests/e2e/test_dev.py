"""The issue's "Done when", end to end in subprocesses: ``antenna dev`` starts, prints four commands, and
those commands, run exactly as printed, submit a job that completes and show its charge in the balance.

The commands are run from a second process with the environment of this one (the CLI's profile folder set
to a temporary one), as a second terminal would run them; nothing is added to them.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow
START_LINES = 200  # bound on what `antenna dev` prints before its commands


@dataclass
class DevServer:
    process: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    printed: list[str] = field(default_factory=list)

    def pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self) -> str:
        try:
            line = self.lines.get(timeout=180)  # a bound for a loaded machine, not a timed assertion
        except queue.Empty:
            raise AssertionError(f"antenna dev printed nothing more; so far: {self.printed}") from None
        if line is None:
            raise AssertionError(f"antenna dev exited ({self.process.poll()}); it printed: {self.printed}")
        self.printed.append(line)
        return line


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ANTENNA_TOKEN", "ANTENNA_URL", "ANTENNA_CONFIG")}
    return {**env, "ANTENNA_CLI_HOME": str(tmp_path / "cli"), "COLUMNS": "200"}


@pytest.fixture
def dev_server(tmp_path: Path, cli_env: dict[str, str]) -> Iterator[tuple[DevServer, int]]:
    antenna = shutil.which("antenna")
    if antenna is None:
        pytest.fail("the `antenna` console script is not on PATH: run the suite with `uv run pytest` (make test)")
    port = free_port()
    process = subprocess.Popen(
        [antenna, "dev", "--data-dir", str(tmp_path / "dev"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env,
    )
    server = DevServer(process)
    pump = threading.Thread(target=server.pump, daemon=True)
    pump.start()
    try:
        yield server, port
    finally:
        process.send_signal(signal.SIGINT)  # what Ctrl-C does: uvicorn shuts the gateway down cleanly
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        pump.join(timeout=10)  # it ends at the output's end of file
        assert process.stdout is not None
        process.stdout.close()


def wait_until_serving(server: DevServer, url: str) -> None:
    with httpx.Client(timeout=5) as client:
        for _ in range(600):  # ~60 s bound on the start-up after the commands are printed
            if server.process.poll() is not None:
                raise AssertionError(f"antenna dev exited ({server.process.returncode}): {server.printed}")
            try:
                if client.get(f"{url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            threading.Event().wait(0.1)
    raise AssertionError(f"antenna dev never answered on {url}")


def test_the_printed_commands_work_as_printed(
    dev_server: tuple[DevServer, int], cli_env: dict[str, str], tmp_path: Path
) -> None:
    server, port = dev_server
    for _ in range(START_LINES):
        if server.next_line() == "From another terminal, try:":
            break
    else:
        raise AssertionError(f"no commands printed: {server.printed}")
    commands = [server.next_line() for _ in range(4)]
    url = f"http://127.0.0.1:{port}"
    assert any(url in line for line in server.printed), server.printed
    # The terminal is signed in through the saved profile: no token is ever printed.
    assert not any(re.search(r"eyJ[\w-]+\.[\w-]+\.", line) for line in server.printed), server.printed
    wait_until_serving(server, url)

    def run(line: str) -> subprocess.CompletedProcess[str]:
        argv = shlex.split(line)  # exactly as printed: the words a shell would pass, no shell involved
        return subprocess.run(argv, env=cli_env, capture_output=True, text=True, timeout=300, check=False)

    whoami_line, submit_line, jobs_line, balance_line = commands
    whoami = run(whoami_line)
    assert whoami.returncode == 0, whoami.stdout + whoami.stderr
    assert "alice@demo.antenna.dev" in whoami.stdout
    assert shlex.split(submit_line)[1:3] == ["submit", "--site"], submit_line
    submitted = run(submit_line)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    done = re.search(r"job (\S+) completed: charged (\S+) of (\S+) (\S+) reserved", submitted.stdout)
    assert done, submitted.stdout + submitted.stderr
    job_id, charged, reserved, unit = done.groups()
    assert 0 < float(charged) <= float(reserved)

    balance = run(balance_line)
    assert balance.returncode == 0, balance.stdout + balance.stderr
    label = unit.removeprefix("cpu-").removesuffix("-hours") + "-h"  # as the 80-column table names units
    row = next(line for line in balance.stdout.splitlines() if f" {label} " in line)
    assert charged in row.split(), balance.stdout  # the charge, in the charged column of the job's unit
    assert "1,000.00" in row  # the demo allocation

    jobs = run(jobs_line)
    assert jobs.returncode == 0, jobs.stdout + jobs.stderr
    assert job_id[:8] in jobs.stdout
    assert "completed" in jobs.stdout

    log = (tmp_path / "dev" / "gateway.log").read_text()
    assert log  # the gateway logged the run ...
    assert "eyJ" not in log  # ... and never a token
    assert "hello from job" not in log  # nor the example job's script

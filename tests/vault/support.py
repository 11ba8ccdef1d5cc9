"""A namespaced Antenna setup on the session's OpenBao: every test gets its own mounts, AppRole mount and
policy prefix (the server is shared by the whole session), prepared by the project's own bootstrap."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import hvac
import pytest

from gateway.clock import Clock
from gateway.secrets.bootstrap import AppRoleSpec, bootstrap, issue_wrapped_secret_id, read_role_id
from gateway.secrets.layout import site_path
from gateway.secrets.policies import PolicyContext
from gateway.secrets.settings import VaultClientOptions
from gateway.secrets.vault import VaultSecretStore
from gateway.settings import Settings, SiteSettings, VaultSettings
from tests.support.openbao import ROOT_TOKEN, OpenBao, bao_binary

POLICIES_DIR = Path(__file__).resolve().parents[2] / "policies" / "vault"

_PARTITION = {
    "billing": {"kind": "whole_node", "unit": "node-hours", "rate_per_node": 1},
    "max_time_minutes": 60,
    "cores_per_node": 4,
    "memory_gb_per_node": 8,
}


def site(connector: str) -> SiteSettings:
    return SiteSettings.model_validate({"connector": connector, "partitions": {"batch": _PARTITION}})


def root_client(server: OpenBao) -> hvac.Client:
    return hvac.Client(url=server.address, token=server.root_token, verify=server.ca_cert or True)


@dataclass
class VaultEnv:
    server: OpenBao
    root: hvac.Client
    settings: Settings
    options: VaultClientOptions
    prefix: str
    secret_id_file: Path

    @property
    def vault(self) -> VaultSettings:
        return self.settings.vault

    @property
    def context(self) -> PolicyContext:
        return PolicyContext.from_settings(self.vault, self.options, prefix=self.prefix)

    @property
    def gateway_policy(self) -> str:
        return self.context.policy_name("antenna-gateway")

    def deliver_secret_id(self) -> str:
        """What the deploy step does: write a fresh response-wrapped secret-id for the gateway."""
        wrapping = issue_wrapped_secret_id(self.root, self.options, wrap_ttl_seconds=120)
        self.secret_id_file.write_text(wrapping + "\n", encoding="utf-8")
        return wrapping

    def store(self, *, clock: Clock | None = None, **kwargs: Any) -> VaultSecretStore:
        kwargs.setdefault("background", False)
        kwargs.setdefault("revoke_on_close", False)
        return VaultSecretStore(self.vault, options=self.options, clock=clock, **kwargs)

    def put_site(self, name: str, values: Mapping[str, Any]) -> int:
        response = self.root.secrets.kv.v2.create_or_update_secret(
            path=site_path(name), secret=dict(values), mount_point=self.vault.kv_mount
        )
        return int(response["data"]["version"])


def make_env(
    server: OpenBao,
    tmp: Path,
    *,
    approle: AppRoleSpec | None = None,
    site_accounts: Mapping[str, list[str]] | None = None,
    options: Mapping[str, Any] | None = None,
    **vault_overrides: Any,
) -> VaultEnv:
    sfx = uuid.uuid4().hex[:8]
    secret_id_file = tmp / f"wrapped-secret-id-{sfx}"
    vault = VaultSettings(
        enabled=True,
        address=server.address,
        auth_method="approle",
        kv_mount=f"kv-{sfx}",
        ssh_mount=f"ssh-{sfx}",
        database_mount=f"db-{sfx}",
        wrapped_secret_id_file=str(secret_id_file),
        ca_cert=server.ca_cert or "",
        secret_ttl_seconds=60,
        **vault_overrides,
    )
    settings = Settings(
        vault=vault,
        sites={"lumi": site("slurmrestd"), "lucia": site("ssh"), "jupiter": site("firecrest")},
    )
    client_options = VaultClientOptions(
        approle_mount=f"approle-{sfx}", login_backoff_initial_seconds=10, **(options or {})
    )
    prefix = f"t{sfx}-"
    root = root_client(server)
    bootstrap(
        root,
        settings,
        POLICIES_DIR,
        options=client_options,
        prefix=prefix,
        site_accounts=site_accounts if site_accounts is not None else {"lucia": ["alice"]},
        approle=approle,
    )
    role_id = read_role_id(root, client_options)
    settings = settings.model_copy(update={"vault": vault.model_copy(update={"role_id": role_id})})
    env = VaultEnv(server, root, settings, client_options, prefix, secret_id_file)
    env.deliver_secret_id()
    return env


@dataclass
class OwnOpenBao:
    """A dev server of our own, for tests that seal it or stop it (the session's server is shared)."""

    server: OpenBao
    process: subprocess.Popen[bytes]
    unseal_key: str

    def seal(self) -> None:
        root_client(self.server).sys.seal()

    def unseal(self) -> None:
        root_client(self.server).sys.submit_unseal_key(self.unseal_key)

    def pause(self) -> None:
        """Unreachable: the process stops answering (connections hang until the client's timeout)."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)


def start_own_openbao(tmp: Path) -> Iterator[OwnOpenBao]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_path = tmp / "own-bao.log"
    args = [
        bao_binary(),
        "server",
        "-dev",
        f"-dev-root-token-id={ROOT_TOKEN}",
        f"-dev-listen-address=127.0.0.1:{port}",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    server = OpenBao(f"http://127.0.0.1:{port}", ROOT_TOKEN, None, args[0])
    try:
        key = None
        for _ in range(300):
            if process.poll() is not None:
                pytest.fail(f"OpenBao exited at start: {log_path.read_text()[-2000:]}")
            match = re.search(r"Unseal Key: (\S+)", log_path.read_text())
            if match:
                try:
                    if httpx.get(f"{server.address}/v1/sys/health", timeout=1).status_code == 200:
                        key = match.group(1)
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        if key is None:
            pytest.fail(f"OpenBao did not become ready: {log_path.read_text()[-2000:]}")
        yield OwnOpenBao(server, process, key)
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

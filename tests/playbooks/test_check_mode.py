"""site.yml in check mode on a fresh throwaway host (what `antenna deploy --plan` does before a first deploy),
and the keycloak role's templates as check mode renders them.

Every role, Keycloak's included, runs in check mode on a host with nothing installed: no task may fail, and
nothing may be installed or started. No Keycloak server can run here: no Debian package carries it and its
release archive (GitHub) is not reachable, only the package registries are; so its role is tested this way,
and the diffs show its rendered configuration and unit, which are checked for the settings that matter.
Check mode still asks the archive's URL (a HEAD request) and fetches its published checksum, so the URL
points at a local mirror serving a stand-in archive and checksum file, as an operator's mirror would. What
only a real Keycloak could show (that it starts with this configuration and answers /health/ready) is not
tested here."""

from __future__ import annotations

import functools
import hashlib
import io
import secrets
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gateway.deploy.package import GatewayPackage
from tests.playbooks.conftest import RUNNABLE_GROUPS
from tests.playbooks.site import SiteRun, free_ports, run_site, stack_variables, write_inventory
from tests.playbooks.throwaway_host import throwaway_host

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]
VERSION = "26.5.3"
# What a real run would create; check mode must not.
CHECK_ABSENT = (
    "/usr/bin/prometheus",
    "/usr/sbin/nginx",
    "/opt/antenna/venv",
    "/opt/openbao/venv",
    "/etc/keycloak/keycloak.conf",
    "/etc/init.d/antenna-gateway",
)


@dataclass
class KeycloakCheck:
    run: SiteRun
    db_password: str
    admin_password: str
    installed: list[str]  # paths of CHECK_ABSENT that exist after the check run

    def rendered(self, task: str) -> str:
        """The content check mode would have the task write, from its diff."""
        for data in self.run.results("runner_on_ok"):
            if data.get("role") == "keycloak" and data.get("task") == task:
                [diff] = data["res"]["diff"]
                return str(diff["after"])
        raise AssertionError(f"no result for the task {task!r}")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def keycloak_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local mirror with a stand-in release archive and its checksum file, as Keycloak publishes them."""
    root = tmp_path_factory.mktemp("keycloak-mirror")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        script = b"#!/bin/sh\nexit 1\n"
        info = tarfile.TarInfo(f"keycloak-{VERSION}/bin/kc.sh")
        info.size, info.mode = len(script), 0o755
        archive.addfile(info, io.BytesIO(script))
    name = f"keycloak-{VERSION}.tar.gz"
    (root / name).write_bytes(buffer.getvalue())
    (root / f"{name}.sha1").write_text(hashlib.sha1(buffer.getvalue()).hexdigest() + "\n")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{name}"
    finally:
        server.shutdown()
        server.server_close()


def _variables(mirror: str, db_password: str, admin_password: str) -> dict[str, Any]:
    return {
        "keycloak_version": VERSION,
        "keycloak_download_url": mirror,
        "keycloak_hostname": "https://sso.antenna-throwaway.test",
        "keycloak_db_url": "jdbc:postgresql://db.antenna-throwaway.test:5432/keycloak",
        "keycloak_db_password": db_password,
        "keycloak_bootstrap_admin_password": admin_password,
        "keycloak_features": ["token-exchange"],
    }


@pytest.fixture(scope="module")
def keycloak_check(keycloak_mirror: str, gateway_package: GatewayPackage) -> Iterator[KeycloakCheck]:
    db_password = "kc-db-" + secrets.token_urlsafe(16)
    admin_password = "kc-admin-" + secrets.token_urlsafe(16)
    with throwaway_host("antenna-check") as host:
        variables = stack_variables(
            free_ports(),
            wheel=gateway_package.wheel,
            requirements=gateway_package.requirements,
            init_output=host.run_dir / "openbao-init.json",
        ) | _variables(keycloak_mirror, db_password, admin_password)
        inventory = write_inventory(host.run_dir / "inventory.yml", host, [*RUNNABLE_GROUPS, "keycloak"], variables)
        run = run_site(inventory, check=True, diff=True)
        installed = [path for path in CHECK_ABSENT if host.path(path).exists()]
        yield KeycloakCheck(run, db_password, admin_password, installed)


def test_every_role_passes_check_mode_on_a_fresh_host_and_changes_nothing(keycloak_check: KeycloakCheck) -> None:
    run = keycloak_check.run
    assert run.ok, run.failures()
    roles = {task.split(":")[0] for task in run.changed_tasks()}
    assert {*RUNNABLE_GROUPS, "node_exporter", "keycloak"} <= roles
    assert keycloak_check.installed == []


def test_keycloak_role_would_download_and_configure(keycloak_check: KeycloakCheck) -> None:
    changed = keycloak_check.run.changed_tasks()
    assert "keycloak: Download the release archive, checked against its published checksum" in changed
    assert "keycloak: Write the server configuration" in changed


def test_configuration_sets_what_the_deployment_relies_on(keycloak_check: KeycloakCheck) -> None:
    conf = keycloak_check.rendered("Write the server configuration")
    lines = {line for line in conf.splitlines() if line and not line.startswith("#")}
    assert {
        "db=postgres",
        "db-url=jdbc:postgresql://db.antenna-throwaway.test:5432/keycloak",
        "hostname=https://sso.antenna-throwaway.test",
        "hostname-strict=true",
        "http-enabled=false",
        "proxy-headers=xforwarded",
        "health-enabled=true",
        "metrics-enabled=true",
        "features=token-exchange",
        "https-certificate-file=/etc/keycloak/tls/server.crt",
    } <= lines
    assert not [line for line in lines if "password" in line]


def test_unit_runs_the_optimized_build_as_its_own_user(keycloak_check: KeycloakCheck) -> None:
    unit = keycloak_check.rendered("Install the systemd unit")
    assert "User=keycloak" in unit.splitlines()
    assert "EnvironmentFile=/etc/keycloak/keycloak.env" in unit.splitlines()
    assert (
        "ExecStart=/opt/keycloak/bin/kc.sh --config-file=/etc/keycloak/keycloak.conf start --optimized"
        in unit.splitlines()
    )


def test_passwords_never_appear_in_output_or_diffs(keycloak_check: KeycloakCheck) -> None:
    text = keycloak_check.run.text()
    assert keycloak_check.db_password not in text
    assert keycloak_check.admin_password not in text


def test_role_refuses_to_run_without_the_database_password(keycloak_mirror: str) -> None:
    with throwaway_host("antenna-keycloak-nopw") as host:
        inventory = write_inventory(
            host.run_dir / "inventory.yml", host, ["keycloak"], _variables(keycloak_mirror, "", "x")
        )
        run = run_site(inventory, check=True, tags=["keycloak"])
    assert not run.ok
    assert any("keycloak_db_password must come from ansible-vault" in f for f in run.failures())

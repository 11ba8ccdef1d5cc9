"""site.yml applied for real, twice, to a throwaway Debian host: what an operator would check after a deploy.

The host (tests/playbooks/throwaway_host.py) is a debootstrap'd Debian 12 in its own namespaces, reached
through Ansible's chroot connection; apt and pip fetch from the real registries. It runs no systemd (tini is
PID 1), so the services start through the roles' init-script fallback; the systemd units are checked with
`systemd-analyze verify`. Keycloak cannot run here: test_check_mode.py runs its role in check mode.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import stat
import time
from typing import Any

import httpx
import hvac
import pytest
import yaml

from gateway.deploy.package import GatewayPackage
from tests.playbooks.conftest import AppliedSite
from tests.playbooks.site import run_site
from tests.playbooks.throwaway_host import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]
SCRAPE_DEADLINE = 90  # seconds for Prometheus to scrape every target at least once (interval 2 s)


def _tls(site: AppliedSite, certificate: str) -> ssl.SSLContext:
    """Trust exactly the certificate the role made on the host."""
    return ssl.create_default_context(cafile=str(site.host.path(certificate)))


def _prometheus(site: AppliedSite, path: str) -> Any:
    response = httpx.get(f"http://127.0.0.1:{site.ports['prometheus']}{path}", timeout=10)
    response.raise_for_status()
    return response.json()["data"]


def test_first_run_configures_every_role(applied_site: AppliedSite) -> None:
    roles = {task.split(":")[0] for task in applied_site.first.changed_tasks()}
    assert {"node_exporter", "openbao", "gateway", "reverse_proxy", "alertmanager", "prometheus"} <= roles
    assert applied_site.first.total("failures") == 0


def test_second_run_changes_nothing(applied_site: AppliedSite) -> None:
    second = applied_site.second
    assert second.ok, second.failures()
    assert second.changed_tasks() == []
    assert second.total("changed") == 0
    assert second.total("ok") > 0


def test_check_mode_after_apply_reports_no_change(applied_site: AppliedSite) -> None:
    check = run_site(applied_site.inventory, check=True)
    assert check.ok, check.failures()
    assert check.changed_tasks() == []


def test_gateway_answers_healthz_through_the_tls_proxy(applied_site: AppliedSite) -> None:
    context = _tls(applied_site, "/etc/nginx/tls/server.crt")
    response = httpx.get(f"https://127.0.0.1:{applied_site.ports['https']}/healthz", verify=context, timeout=10)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.headers["strict-transport-security"].startswith("max-age=")


def test_proxy_redirects_plain_http_and_keeps_metrics_private(applied_site: AppliedSite) -> None:
    ports = applied_site.ports
    plain = httpx.get(f"http://127.0.0.1:{ports['http']}/healthz", timeout=10)
    assert plain.status_code == 301
    assert plain.headers["location"] == f"https://127.0.0.1:{ports['https']}/healthz"
    context = _tls(applied_site, "/etc/nginx/tls/server.crt")
    public = httpx.get(f"https://127.0.0.1:{ports['https']}/metrics", verify=context, timeout=10)
    assert public.status_code == 404
    private = httpx.get(f"http://127.0.0.1:{ports['gateway']}/metrics", timeout=10)
    assert private.status_code == 200


def test_prometheus_scrapes_the_gateway_and_node_exporter(applied_site: AppliedSite) -> None:
    deadline = time.monotonic() + SCRAPE_DEADLINE
    while True:
        targets = _prometheus(applied_site, "/api/v1/targets")["activeTargets"]
        health = {t["labels"]["job"]: (t["health"], t["lastError"]) for t in targets}
        if all(state != "unknown" for state, _ in health.values()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert health == {"antenna-gateway": ("up", ""), "node": ("up", ""), "prometheus": ("up", "")}
    result = _prometheus(applied_site, "/api/v1/query?query=up%7Bjob%3D%22antenna-gateway%22%7D")["result"]
    assert [sample["value"][1] for sample in result] == ["1"]


def test_prometheus_loaded_the_repository_rules(applied_site: AppliedSite) -> None:
    source = REPO_ROOT / "dashboards" / "prometheus"
    expected = {
        group["name"]
        for path in sorted(source.glob("*.y*ml"))
        if "test" not in path.name
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", [])
    }
    loaded = {group["name"] for group in _prometheus(applied_site, "/api/v1/rules")["groups"]}
    assert loaded == expected


def test_prometheus_sends_alerts_to_alertmanager(applied_site: AppliedSite) -> None:
    active = _prometheus(applied_site, "/api/v1/alertmanagers")["activeAlertmanagers"]
    assert [am["url"] for am in active] == [f"http://127.0.0.1:{applied_site.ports['alertmanager']}/api/v2/alerts"]


def test_openbao_is_initialised_and_unsealed_on_raft_over_tls(applied_site: AppliedSite) -> None:
    url = f"https://127.0.0.1:{applied_site.ports['openbao']}"
    ca = str(applied_site.host.path("/etc/openbao/tls/ca.crt"))
    health = httpx.get(f"{url}/v1/sys/health", verify=ssl.create_default_context(cafile=ca), timeout=10).json()
    assert health["initialized"] is True
    assert health["sealed"] is False
    answer = json.loads(applied_site.init_output.read_text())
    assert len(answer["keys_base64"]) == 3
    client = hvac.Client(url=url, token=answer["root_token"], verify=ca)
    servers = client.sys.read_raft_config()["data"]["config"]["servers"]
    assert [(s["node_id"], s["voter"], s["leader"]) for s in servers] == [("throwaway", True, True)]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{applied_site.ports['openbao']}/v1/sys/health", timeout=10).raise_for_status()


def test_openbao_init_answer_is_readable_by_its_owner_only(applied_site: AppliedSite) -> None:
    assert stat.S_IMODE(applied_site.init_output.stat().st_mode) == 0o600


def test_no_unseal_key_or_root_token_in_any_output(applied_site: AppliedSite) -> None:
    answer = json.loads(applied_site.init_output.read_text())
    secrets = [answer["root_token"], *answer["keys_base64"], *answer["keys"]]
    for run in (applied_site.first, applied_site.second):
        text = run.text()
        assert not [s for s in secrets if s in text]


def test_services_run_as_their_own_unprivileged_users(applied_site: AppliedSite) -> None:
    processes = applied_site.host.run("ps", "-eo", "user:20,args", "--no-headers").stdout.splitlines()
    users = {args: user for user, args in (line.split(None, 1) for line in processes)}

    def user_of(fragment: str) -> set[str]:
        return {user for args, user in users.items() if fragment in args}

    assert user_of("antenna serve --config /etc/antenna/config.yaml") == {"antenna"}
    assert user_of("/usr/local/bin/bao server") == {"openbao"}
    assert user_of("/usr/bin/prometheus ") == {"prometheus"}


def test_secret_bearing_files_are_not_world_readable(applied_site: AppliedSite) -> None:
    for path in ("/etc/antenna/config.yaml", "/etc/antenna/gateway.env", "/etc/openbao/openbao.hcl"):
        assert stat.S_IMODE(applied_site.host.path(path).stat().st_mode) & 0o007 == 0, path
    for key in ("/etc/openbao/tls/server.key", "/etc/nginx/tls/server.key"):
        assert stat.S_IMODE(applied_site.host.path(key).stat().st_mode) & 0o077 in (0, 0o040), key


def test_systemd_units_pass_systemd_analyze_verify(applied_site: AppliedSite) -> None:
    # systemd does not run on the throwaway host, but its verifier checks the units' syntax, users and paths.
    for unit in ("antenna-gateway.service", "openbao.service"):
        result = applied_site.host.run("systemd-analyze", "verify", "--man=no", f"/etc/systemd/system/{unit}")
        assert (result.returncode, result.stderr) == (0, ""), unit


def test_gateway_runs_the_package_built_from_this_checkout(
    applied_site: AppliedSite, gateway_package: GatewayPackage
) -> None:
    marker = applied_site.host.path("/opt/antenna/venv/.antenna-installed").read_text().split()
    # The role records Ansible's checksums (SHA-1) of the requirements and the wheel it installed.
    files = (gateway_package.requirements, gateway_package.wheel)
    built = [hashlib.sha1(path.read_bytes()).hexdigest() for path in files]
    assert marker == built

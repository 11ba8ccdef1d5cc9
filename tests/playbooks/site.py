"""Running playbooks/site.yml through ansible-runner against throwaway hosts, keeping every raw event."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner
import yaml

from tests.playbooks.throwaway_host import REPO_ROOT, ThrowawayHost, free_port

PLAYBOOKS = REPO_ROOT / "playbooks"
HOST = "throwaway"
PORT_NAMES = ("gateway", "https", "http", "node", "prometheus", "alertmanager", "openbao", "openbao_cluster")


@dataclass
class SiteRun:
    status: str
    rc: int
    stats: dict[str, dict[str, int]]
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0

    def total(self, key: str) -> int:
        return sum(self.stats.get(key, {}).values())

    def results(self, kind: str) -> list[dict[str, Any]]:
        return [e["event_data"] for e in self.events if e.get("event") == kind]

    def changed_tasks(self) -> list[str]:
        return [
            f"{d.get('role', '')}: {d.get('task', '')}"
            for d in self.results("runner_on_ok")
            if d.get("res", {}).get("changed")
        ]

    def failures(self) -> list[str]:
        return [
            f"{d.get('task')}: {d.get('res', {}).get('msg')}"
            for d in self.results("runner_on_failed")
            if not d.get("ignore_errors")
        ]

    def text(self) -> str:
        """Everything the run reported (output and results), to search for what must never appear."""
        return "\n".join(json.dumps(e, default=str) for e in self.events)


def run_site(inventory: Path, *, check: bool = False, diff: bool = False, tags: Iterable[str] = ()) -> SiteRun:
    events: list[dict[str, Any]] = []

    def keep(event: Mapping[str, Any]) -> bool:
        events.append(dict(event))
        return True

    cmdline = (["--check"] if check else []) + (["--diff"] if diff else [])
    if tags:
        cmdline += ["--tags", ",".join(tags)]
    with tempfile.TemporaryDirectory(prefix="antenna-site-") as private:
        runner = ansible_runner.run(
            private_data_dir=private,
            project_dir=str(PLAYBOOKS),
            playbook=str(PLAYBOOKS / "site.yml"),
            inventory=str(inventory),
            cmdline=" ".join(cmdline) or None,
            envvars={
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
                "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"),
            },
            event_handler=keep,
            quiet=True,
            suppress_env_files=True,
        )
        return SiteRun(status=runner.status, rc=runner.rc, stats=runner.stats or {}, events=events)


def free_ports() -> dict[str, int]:
    return {name: free_port() for name in PORT_NAMES}


def write_inventory(path: Path, host: ThrowawayHost, groups: Iterable[str], variables: Mapping[str, Any]) -> Path:
    """An inventory with the throwaway host in ``groups`` (site.yml's plays) and ``variables`` as its vars."""
    hostvars = host.connection_vars() | dict(variables)
    inventory = {
        "all": {
            "hosts": {HOST: hostvars},
            "children": {group: {"hosts": {HOST: None}} for group in groups},
        }
    }
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def stack_variables(ports: Mapping[str, int], *, wheel: Path, requirements: Path, init_output: Path) -> dict[str, Any]:
    """Every service on the one host, each on a free loopback port (the host shares this machine's network)."""
    return {
        "gateway_wheel": str(wheel),
        "gateway_requirements": str(requirements),
        "gateway_port": ports["gateway"],
        "gateway_config": {"public_url": f"https://127.0.0.1:{ports['https']}"},
        "reverse_proxy_server_name": "antenna-throwaway.test",
        "reverse_proxy_listen_address": "127.0.0.1",
        "reverse_proxy_https_port": ports["https"],
        "reverse_proxy_http_port": ports["http"],
        "reverse_proxy_upstreams": [f"127.0.0.1:{ports['gateway']}"],
        "reverse_proxy_tls_extra_names": ["IP:127.0.0.1"],
        "node_exporter_listen_address": f"127.0.0.1:{ports['node']}",
        "prometheus_listen_address": f"127.0.0.1:{ports['prometheus']}",
        "prometheus_gateway_targets": [f"127.0.0.1:{ports['gateway']}"],
        "prometheus_node_targets": [f"127.0.0.1:{ports['node']}"],
        "prometheus_alertmanager_targets": [f"127.0.0.1:{ports['alertmanager']}"],
        "prometheus_scrape_interval": "2s",
        "prometheus_evaluation_interval": "2s",
        "alertmanager_listen_address": f"127.0.0.1:{ports['alertmanager']}",
        "openbao_listen_address": "127.0.0.1",
        "openbao_api_port": ports["openbao"],
        "openbao_cluster_port": ports["openbao_cluster"],
        "openbao_api_addr": f"https://127.0.0.1:{ports['openbao']}",
        "openbao_cluster_addr": f"https://127.0.0.1:{ports['openbao_cluster']}",
        # Three shares, two to unseal: the role must send more than one key.
        "openbao_init_key_shares": 3,
        "openbao_init_key_threshold": 2,
        "openbao_init_allow_plaintext_keys": True,
        "openbao_init_output": str(init_output),
    }

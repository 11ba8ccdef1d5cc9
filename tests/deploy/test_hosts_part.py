"""`antenna deploy --only hosts` for real, against a fresh throwaway Debian host.

The host belongs to no service group, so site.yml gives it what every host gets: node_exporter. The deploy
is planned first (check mode: nothing may change), applied, applied again (nothing left to change), and once
with a mistyped variable, which must fail with the failing task's message, through the command too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from gateway.deploy import DeployEvent, DeployRequest, DeploySummary, deploy
from gateway.deploy.cli import EXIT_FAILED, make_deploy_app
from tests.playbooks.site import write_inventory
from tests.playbooks.throwaway_host import ThrowawayHost, free_port, throwaway_host

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]
INSTALL_TASK = "Install prometheus-node-exporter from Debian"


@dataclass
class Deployed:
    host: ThrowawayHost
    port: int
    inventory: Path
    plan: DeploySummary
    plan_events: list[DeployEvent]
    plan_left_host_untouched: bool
    first: DeploySummary
    first_events: list[DeployEvent]
    second: DeploySummary


def _port_open(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    except httpx.ConnectError:
        return False
    return True


def _deploy(inventory: Path, *, plan: bool = False) -> tuple[DeploySummary, list[DeployEvent]]:
    events: list[DeployEvent] = []
    request = DeployRequest(stack="throwaway", plan=plan, only=frozenset({"hosts"}), inventory=inventory)
    return deploy(request, events.append), events


@pytest.fixture(scope="module")
def deployed() -> Iterator[Deployed]:
    with throwaway_host("antenna-deploy") as host:
        port = free_port()
        inventory = write_inventory(
            host.run_dir / "inventory.yml", host, [], {"node_exporter_listen_address": f"127.0.0.1:{port}"}
        )
        plan, plan_events = _deploy(inventory, plan=True)
        untouched = not _port_open(port) and not host.path("/usr/bin/prometheus-node-exporter").exists()
        first, first_events = _deploy(inventory)
        second, _ = _deploy(inventory)
        yield Deployed(host, port, inventory, plan, plan_events, untouched, first, first_events, second)


def test_plan_shows_the_changes_and_makes_none(deployed: Deployed) -> None:
    assert deployed.plan.ok, deployed.plan.failures
    assert deployed.plan.plan
    assert any(e.kind == "task_changed" and e.name == INSTALL_TASK for e in deployed.plan_events)
    assert deployed.plan_left_host_untouched


def test_deploy_reports_each_task_as_it_runs(deployed: Deployed) -> None:
    kinds = [(e.kind, e.name) for e in deployed.first_events if e.name == INSTALL_TASK]
    assert kinds == [("task_started", INSTALL_TASK), ("task_changed", INSTALL_TASK)]
    steps = [(e.kind, e.step) for e in deployed.first_events if e.kind.startswith("step_")]
    assert steps == [("step_started", "hosts"), ("step_finished", "hosts")]
    assert all(e.role == "node_exporter" for e in deployed.first_events if e.kind == "task_changed")


def test_deploy_changes_the_host_and_summarises(deployed: Deployed) -> None:
    first = deployed.first
    assert first.ok, first.failures
    assert [step.step for step in first.steps] == ["hosts"]
    assert first.changed == first.steps[0].counts["changed"] > 0
    response = httpx.get(f"http://127.0.0.1:{deployed.port}/metrics", timeout=10)
    assert response.status_code == 200
    assert "node_exporter_build_info" in response.text


def test_second_deploy_has_nothing_to_change(deployed: Deployed) -> None:
    assert deployed.second.ok
    assert deployed.second.changed == 0


def test_failed_task_is_reported_with_its_message(deployed: Deployed, tmp_path: Path) -> None:
    # A mistake an operator could make: a mapping where the role declares a list.
    broken = write_inventory(
        tmp_path / "inventory.yml", deployed.host, [], {"node_exporter_disabled_collectors": {"not": "a list"}}
    )
    summary, events = _deploy(broken)
    assert not summary.ok
    [failure] = summary.failures
    assert failure.where == "throwaway"
    assert "node_exporter_disabled_collectors" in failure.message
    assert [e.message for e in events if e.kind == "task_failed"] == [failure.message]

    result = CliRunner().invoke(
        make_deploy_app(), ["--stack", "throwaway", "--only", "hosts", "--inventory", str(broken)]
    )
    assert result.exit_code == EXIT_FAILED
    assert "node_exporter_disabled_collectors" in result.output

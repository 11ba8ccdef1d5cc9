"""`antenna deploy` up to the Pulumi call: the Pulumi engine (CLI) cannot be installed here.

What is tested: a deploy that needs Pulumi refuses, before anything runs, with a message naming the missing
`pulumi` CLI and how to install it (through the Python API and the command); the component targets match the
program in infra/; engine events become progress events. What a real `pulumi up` does is not tested here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pulumi.automation import EngineEvent, OpType, ResourcePreEvent, StepEventMetadata
from typer.testing import CliRunner

from gateway.deploy import DeployEvent, DeployRequest, deploy
from gateway.deploy.cli import EXIT_REFUSED, make_deploy_app
from gateway.deploy.events import pulumi_event
from gateway.deploy.pulumi_stack import COMPONENT_TYPES, component_targets
from gateway.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_pulumi_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Only the Python environment's tools (uv run puts them first): no `pulumi` anywhere.
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))


@pytest.mark.usefixtures("no_pulumi_on_path")
@pytest.mark.parametrize("only", [frozenset({"identity"}), frozenset({"secrets", "gateway"}), frozenset()])
def test_deploy_refuses_without_the_pulumi_cli_before_running_anything(only: frozenset[str]) -> None:
    events: list[DeployEvent] = []
    with pytest.raises(ConfigurationError) as refused:
        deploy(DeployRequest(stack="dev", only=only), events.append)
    assert "`pulumi` CLI is not installed" in refused.value.detail
    assert "https://get.pulumi.com" in refused.value.detail
    assert events == []  # not even the hosts part started


@pytest.mark.usefixtures("no_pulumi_on_path")
def test_command_exits_refused_and_names_the_missing_cli() -> None:
    result = CliRunner().invoke(make_deploy_app(), ["--stack", "dev", "--only", "identity"])
    assert result.exit_code == EXIT_REFUSED
    assert "pulumi" in result.output
    assert "CLI is not installed" in result.output


def test_command_rejects_an_unknown_part() -> None:
    result = CliRunner().invoke(make_deploy_app(), ["--stack", "dev", "--only", "dns"])
    assert result.exit_code == 2
    assert "unknown part(s) dns" in result.output


@pytest.mark.parametrize("stack", ["../etc", "dev/../../x", ""])
def test_stack_names_cannot_leave_the_repository(stack: str) -> None:
    with pytest.raises(ConfigurationError, match="stack name"):
        deploy(DeployRequest(stack=stack, only=frozenset({"hosts"})), lambda _: None)


def test_component_types_match_the_pulumi_program(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO_ROOT / "infra"))
    from antenna_infra.program import COMPONENT_TYPES as PROGRAM_TYPES

    assert PROGRAM_TYPES == COMPONENT_TYPES


def test_targets_name_each_component_and_everything_under_it() -> None:
    assert component_targets("prod", "antenna", ["identity"]) == [
        "urn:pulumi:prod::antenna::antenna:index:Identity::identity",
        "urn:pulumi:prod::antenna::antenna:index:Identity$**",
    ]


def test_engine_events_become_progress_events() -> None:
    urn = "urn:pulumi:prod::antenna::antenna:index:Identity$keycloak:index/realm:Realm::antenna"
    raw = EngineEvent(
        sequence=1,
        timestamp=0,
        resource_pre_event=ResourcePreEvent(
            metadata=StepEventMetadata(op=OpType.CREATE, urn=urn, type="keycloak:index/realm:Realm", provider="")
        ),
    )
    assert pulumi_event(raw) == DeployEvent(
        "pulumi",
        "resource_started",
        name="antenna:index:Identity$keycloak:index/realm:Realm::antenna",
        message="create",
    )


class _RecordingStack:
    """Stands in for the Automation API's stack (the engine cannot run here): records what it is asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.workspace = SimpleNamespace(project_settings=lambda: SimpleNamespace(name="antenna"))

    def preview(self, **kwargs: Any) -> Any:
        self.calls.append(("preview", kwargs))
        return SimpleNamespace(change_summary={OpType.SAME: 3})

    def up(self, **kwargs: Any) -> Any:
        self.calls.append(("up", kwargs))
        return SimpleNamespace(summary=SimpleNamespace(resource_changes={"update": 1}))


@pytest.mark.parametrize(("plan", "operation"), [(True, "preview"), (False, "up")])
def test_plan_and_apply_run_the_repositorys_policy_pack(
    monkeypatch: pytest.MonkeyPatch, plan: bool, operation: str
) -> None:
    from pulumi import automation

    stack = _RecordingStack()
    monkeypatch.setattr("gateway.deploy.pulumi_stack.shutil.which", lambda name: f"/opt/bin/{name}")
    monkeypatch.setattr(automation, "PulumiCommand", lambda: None)
    monkeypatch.setattr(automation, "create_or_select_stack", lambda **_: stack)
    summary = deploy(DeployRequest(stack="dev", only=frozenset({"identity"}), plan=plan), lambda _: None)
    assert summary.ok
    ((called, kwargs),) = stack.calls
    assert called == operation
    assert kwargs["policy_packs"] == [str(REPO_ROOT / "policies" / "pulumi")]
    assert (REPO_ROOT / "policies" / "pulumi" / "PulumiPolicy.yaml").is_file()
    assert kwargs["target"] == component_targets("dev", "antenna", ["identity"])

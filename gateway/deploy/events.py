"""What a deploy reports: progress events as they happen, and the summary at the end.

Both tools' native events are translated here (ansible-runner's event dicts, Pulumi's engine events), so a
display needs to know neither. Messages are the tools' own, which already hide `no_log` task output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pulumi.automation import EngineEvent

Step = Literal["hosts", "pulumi"]
EventKind = Literal[
    "step_started",
    "step_finished",
    "task_started",
    "task_ok",
    "task_changed",
    "task_skipped",
    "task_failed",
    "host_unreachable",
    "resource_started",
    "resource_done",
    "resource_failed",
    "message",
]
MESSAGE_LIMIT = 2000  # characters of a failure message kept; a stack trace tail is enough to act on


@dataclass(frozen=True, slots=True)
class DeployEvent:
    step: Step
    kind: EventKind
    name: str = ""  # task name, or resource type::name
    host: str = ""
    role: str = ""
    message: str = ""  # the failure's message, a resource's operation, a diagnostic


@dataclass(frozen=True, slots=True)
class Failure:
    step: Step
    where: str  # host (Ansible) or resource (Pulumi)
    what: str  # task name or operation
    message: str


@dataclass(slots=True)
class StepResult:
    step: Step
    ok: bool
    # Ansible: ok / changed / failed / unreachable / skipped task results; Pulumi: create / update / delete / ...
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    note: str = ""

    @property
    def changed(self) -> int:
        if self.step == "hosts":
            return self.counts.get("changed", 0)
        return sum(n for op, n in self.counts.items() if op not in ("same", "read"))


@dataclass(slots=True)
class DeploySummary:
    stack: str
    plan: bool
    steps: list[StepResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)

    @property
    def changed(self) -> int:
        return sum(step.changed for step in self.steps)

    @property
    def failures(self) -> list[Failure]:
        return [failure for step in self.steps for failure in step.failures]


# ansible-runner ---------------------------------------------------------------------------------------------

_TASK_START = ("playbook_on_task_start", "playbook_on_handler_task_start")


def ansible_event(event: Mapping[str, Any]) -> DeployEvent | None:
    """One ansible-runner event as a DeployEvent, or None for the events a display does not show."""
    kind = event.get("event")
    data: Mapping[str, Any] = event.get("event_data") or {}
    task = str(data.get("task") or "")
    role = str(data.get("role") or "")
    host = str(data.get("host") or "")
    res: Mapping[str, Any] = data.get("res") or {}
    if kind in _TASK_START:
        return DeployEvent("hosts", "task_started", name=task, role=role)
    if kind == "runner_on_ok":
        changed = bool(res.get("changed"))
        return DeployEvent("hosts", "task_changed" if changed else "task_ok", name=task, host=host, role=role)
    if kind == "runner_on_skipped":
        return DeployEvent("hosts", "task_skipped", name=task, host=host, role=role)
    if kind == "runner_on_failed":
        if data.get("ignore_errors"):
            return DeployEvent("hosts", "task_ok", name=task, host=host, role=role)
        return DeployEvent("hosts", "task_failed", name=task, host=host, role=role, message=result_message(res))
    if kind == "runner_on_unreachable":
        return DeployEvent("hosts", "host_unreachable", name=task, host=host, role=role, message=result_message(res))
    return None


def result_message(res: Mapping[str, Any]) -> str:
    """The useful part of a failed task's result: its msg, a failed loop item's msg, and stderr."""
    parts: list[str] = []
    msg = res.get("msg")
    if msg:
        parts.append(str(msg))
    for item in res.get("results") or []:
        if isinstance(item, Mapping) and item.get("failed"):
            label = item.get("_ansible_item_label", item.get("item", ""))
            parts.append(f"item {label}: {item.get('msg') or item.get('stderr') or 'failed'}")
            break
    stderr = res.get("stderr")
    if stderr and str(stderr) not in parts:
        parts.append(str(stderr))
    if res.get("censored"):
        parts.append(str(res["censored"]))
    text = "\n".join(parts) or "failed without a message"
    return text if len(text) <= MESSAGE_LIMIT else "…" + text[-MESSAGE_LIMIT:]


# Pulumi -----------------------------------------------------------------------------------------------------


def pulumi_event(event: EngineEvent) -> DeployEvent | None:
    """One Pulumi engine event as a DeployEvent, or None for the events a display does not show."""
    if event.resource_pre_event is not None:
        meta = event.resource_pre_event.metadata
        return DeployEvent("pulumi", "resource_started", name=resource_name(meta.urn), message=str(meta.op.value))
    if event.res_outputs_event is not None:
        meta = event.res_outputs_event.metadata
        return DeployEvent("pulumi", "resource_done", name=resource_name(meta.urn), message=str(meta.op.value))
    if event.res_op_failed_event is not None:
        meta = event.res_op_failed_event.metadata
        return DeployEvent("pulumi", "resource_failed", name=resource_name(meta.urn), message=str(meta.op.value))
    diagnostic = event.diagnostic_event
    if diagnostic is not None and diagnostic.severity in ("error", "warning"):
        name = resource_name(diagnostic.urn) if diagnostic.urn else ""
        return DeployEvent("pulumi", "message", name=name, message=diagnostic.message.strip())
    return None


def resource_name(urn: str) -> str:
    """`type::name` from a URN (urn:pulumi:stack::project::type::name): what an operator recognises."""
    parts = urn.split("::")
    return "::".join(parts[-2:]) if len(parts) >= 4 else urn

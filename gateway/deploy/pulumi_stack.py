"""The Pulumi parts (identity, secrets, gateway): `infra/` through the Automation API, which drives the CLI."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.deploy.events import DeployEvent, Failure, StepResult, pulumi_event
from gateway.errors import ConfigurationError

if TYPE_CHECKING:
    from pulumi.automation import EngineEvent

PULUMI_INSTALL_HINT = (
    "install it with `curl -fsSL https://get.pulumi.com | sh` "
    "(see https://www.pulumi.com/docs/iac/download-install/) and make sure `pulumi` is on PATH"
)
# The program's component resource types and names (infra/antenna_infra/program.py); a test keeps them equal.
COMPONENT_TYPES = {
    "identity": "antenna:index:Identity",
    "secrets": "antenna:index:Secrets",
    "gateway": "antenna:index:Gateway",
    "monitoring": "antenna:index:Monitoring",
}


def require_pulumi_cli() -> str:
    """The `pulumi` executable, or a ConfigurationError saying it is missing and how to install it."""
    found = shutil.which("pulumi")
    if found is None:
        raise ConfigurationError(
            "the `pulumi` CLI is not installed (not found on PATH); the Automation API needs it to deploy "
            f"the identity, secrets and gateway parts: {PULUMI_INSTALL_HINT}"
        )
    return found


def component_targets(stack: str, project: str, parts: Iterable[str]) -> list[str]:
    """URNs of the parts' components and (as globs) of everything under them, for `up --target`."""
    targets: list[str] = []
    for part in sorted(parts):
        prefix = f"urn:pulumi:{stack}::{project}::{COMPONENT_TYPES[part]}"
        targets += [f"{prefix}::{part}", f"{prefix}$**"]
    return targets


def run_pulumi(
    *,
    work_dir: Path,
    stack: str,
    plan: bool,
    parts: frozenset[str],
    policy_pack: Path,
    progress: Callable[[DeployEvent], None],
) -> StepResult:
    """`preview` (plan) or `up` of the stack; ``parts`` empty means the whole stack, else only those components.

    Both run the deployment rules of ``policy_pack``: a mandatory violation fails the preview and stops the
    update before any resource changes, so a plan shows what the rules would refuse."""
    require_pulumi_cli()
    from pulumi import automation as auto

    def on_event(raw: EngineEvent) -> None:
        event = pulumi_event(raw)
        if event is not None:
            progress(event)

    operation = "preview" if plan else "up"
    try:
        workspace_options = auto.LocalWorkspaceOptions(pulumi_command=auto.PulumiCommand())
        selected = auto.create_or_select_stack(stack_name=stack, work_dir=str(work_dir), opts=workspace_options)
        project = selected.workspace.project_settings().name
        targets = component_targets(stack, project, parts) if parts else None
        packs = [str(policy_pack)]
        if plan:
            preview = selected.preview(target=targets, policy_packs=packs, on_event=on_event, color="never")
            counts = _counts(preview.change_summary)
        else:
            up = selected.up(target=targets, policy_packs=packs, on_event=on_event, color="never")
            counts = _counts(up.summary.resource_changes or {})
    except auto.CommandError as exc:
        message = str(exc).strip()[-2000:]
        return StepResult("pulumi", ok=False, failures=[Failure("pulumi", stack, operation, message)])
    return StepResult("pulumi", ok=True, counts=counts)


def _counts(changes: Mapping[Any, int]) -> dict[str, int]:
    # Operation names as plain strings ("create", "update", "same"...): the SDK gives enums or strings.
    return {str(getattr(op, "value", op)): int(n) for op, n in changes.items()}

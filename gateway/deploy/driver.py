"""`deploy(request, progress)`: checks every precondition first, then runs the hosts part and the Pulumi parts."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.deploy.events import DeployEvent, DeploySummary
from gateway.deploy.hosts import PlaybookRun, run_playbook
from gateway.deploy.package import build_gateway_package, find_uv
from gateway.deploy.pulumi_stack import require_pulumi_cli, run_pulumi
from gateway.errors import ConfigurationError

Part = Literal["identity", "secrets", "hosts", "gateway"]
# Hosts first: Keycloak and OpenBao must be up before Pulumi configures the realm and Vault on them.
PARTS: tuple[Part, ...] = ("hosts", "identity", "secrets", "gateway")
PULUMI_PARTS: frozenset[str] = frozenset({"identity", "secrets", "gateway"})
_STACK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class DeployRequest:
    stack: str
    plan: bool = False  # Ansible in check mode, Pulumi preview: nothing changes
    only: frozenset[Part] = frozenset()  # empty: every part
    inventory: Path | None = None  # default: playbooks/inventories/<stack>
    limit: str | None = None  # Ansible host pattern
    repo_root: Path | None = None  # default: the checkout this package runs from


def default_repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def deploy(request: DeployRequest, progress: Callable[[DeployEvent], None]) -> DeploySummary:
    """Run the requested parts and return what changed; a failed part stops the ones after it.

    Raises ConfigurationError before anything runs when a tool or file the parts need is missing.
    """
    if not _STACK_NAME.match(request.stack):
        raise ConfigurationError(f"stack name {request.stack!r} must match {_STACK_NAME.pattern}")
    repo = request.repo_root or default_repo_root()
    parts = request.only or frozenset(PARTS)
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ConfigurationError(f"unknown part(s) {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}")
    pulumi_parts = frozenset(parts & PULUMI_PARTS)
    playbooks = repo / "playbooks"
    inventory = request.inventory or playbooks / "inventories" / request.stack
    work_dir = repo / "infra"
    policy_pack = repo / "policies" / "pulumi"
    if pulumi_parts:
        require_pulumi_cli()
        if not (work_dir / f"Pulumi.{request.stack}.yaml").is_file():
            raise ConfigurationError(f"no Pulumi stack configuration infra/Pulumi.{request.stack}.yaml")
        if not (policy_pack / "PulumiPolicy.yaml").is_file():
            raise ConfigurationError("policies/pulumi/PulumiPolicy.yaml is missing: no deploy without its rules")
    if "hosts" in parts:
        if not (playbooks / "site.yml").is_file():
            raise ConfigurationError(f"{playbooks / 'site.yml'} is missing: deploy from a checkout of the repository")
        if not inventory.exists():
            raise ConfigurationError(f"no inventory for stack {request.stack!r}: {inventory} does not exist")
        find_uv()

    summary = DeploySummary(stack=request.stack, plan=request.plan)
    if "hosts" in parts:
        progress(DeployEvent("hosts", "step_started", name=str(inventory)))
        # Built per deploy, in a directory of its own: concurrent deploys never see each other's wheel.
        with tempfile.TemporaryDirectory(prefix="antenna-package-") as dist:
            package = build_gateway_package(repo, Path(dist))
            run = PlaybookRun(
                playbooks_dir=playbooks,
                inventory=inventory,
                check=request.plan,
                limit=request.limit,
                extravars={"gateway_wheel": str(package.wheel), "gateway_requirements": str(package.requirements)},
            )
            result = run_playbook(run, progress)
        summary.steps.append(result)
        progress(DeployEvent("hosts", "step_finished", message="ok" if result.ok else "failed"))
        if not result.ok:
            return summary
    if pulumi_parts:
        # All three Pulumi parts together are the whole stack (with monitoring): no --target then.
        targets = frozenset() if pulumi_parts == PULUMI_PARTS else pulumi_parts
        progress(DeployEvent("pulumi", "step_started", name=request.stack))
        result = run_pulumi(
            work_dir=work_dir,
            stack=request.stack,
            plan=request.plan,
            parts=targets,
            policy_pack=policy_pack,
            progress=progress,
        )
        summary.steps.append(result)
        progress(DeployEvent("pulumi", "step_finished", message="ok" if result.ok else "failed"))
    return summary

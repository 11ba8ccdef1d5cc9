"""The `hosts` part: playbooks/site.yml through ansible-runner, with its events turned into progress."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.deploy.events import DeployEvent, Failure, StepResult, ansible_event
from gateway.errors import ConfigurationError

STAT_KEYS = {"ok": "ok", "changed": "changed", "failures": "failed", "dark": "unreachable", "skipped": "skipped"}


@dataclass(frozen=True, slots=True)
class PlaybookRun:
    playbooks_dir: Path
    inventory: Path
    check: bool = False  # check mode: what `--plan` shows
    limit: str | None = None
    tags: tuple[str, ...] = ()
    extravars: Mapping[str, Any] = field(default_factory=dict)


def run_playbook(run: PlaybookRun, progress: Callable[[DeployEvent], None]) -> StepResult:
    """Run site.yml; every task start and result goes to ``progress``; failures are kept with their message."""
    import ansible_runner

    site = run.playbooks_dir / "site.yml"
    if not site.is_file():
        raise ConfigurationError(f"{site} does not exist: run `antenna deploy` from a checkout of the repository")
    if not run.inventory.exists():
        raise ConfigurationError(f"inventory {run.inventory} does not exist")
    failures: list[Failure] = []

    def on_event(raw: Mapping[str, Any]) -> bool:
        event = ansible_event(raw)
        if event is not None:
            if event.kind in ("task_failed", "host_unreachable"):
                failures.append(Failure("hosts", event.host, event.name, event.message))
            progress(event)
        return True  # keep ansible-runner's own record of the event too

    cmdline = ["--check"] if run.check else []
    if run.tags:
        cmdline += ["--tags", ",".join(run.tags)]
    # The private data dir holds the run's events (task output, diffs): it is removed afterwards.
    with tempfile.TemporaryDirectory(prefix="antenna-deploy-") as private:
        runner = ansible_runner.run(
            private_data_dir=private,
            project_dir=str(run.playbooks_dir),
            playbook=str(site),
            inventory=str(run.inventory.resolve()),
            extravars=dict(run.extravars),
            limit=run.limit,
            cmdline=" ".join(cmdline) or None,
            envvars=_environment(run.playbooks_dir),
            event_handler=on_event,
            quiet=True,
            suppress_env_files=True,
        )
        stats: Mapping[str, Mapping[str, int]] = runner.stats or {}
        counts = {name: sum(stats.get(key, {}).values()) for key, name in STAT_KEYS.items()}
        ok = runner.status == "successful" and runner.rc == 0
        if not ok and not failures:
            # Failed before any task (a syntax error, an unreadable inventory): the output says why.
            tail = runner.stdout.read()[-2000:] if runner.stdout else ""
            failures.append(Failure("hosts", "", "ansible-playbook", tail.strip() or f"status {runner.status}"))
    return StepResult("hosts", ok=ok, counts=counts, failures=failures)


def _environment(playbooks_dir: Path) -> dict[str, str]:
    # ansible-playbook comes from the environment running us, which may not be first on PATH.
    bin_dir = str(Path(sys.executable).parent)
    return {
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "ANSIBLE_CONFIG": str(playbooks_dir / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
    }

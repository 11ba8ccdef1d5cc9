"""`antenna deploy`: the typer sub-app (built on demand) and its live display of tasks and resources."""

from __future__ import annotations

from collections import Counter, deque
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from gateway.deploy.events import DeployEvent, DeploySummary

# The same exit codes as the rest of the `antenna` command.
EXIT_FAILED, EXIT_REFUSED = 1, 3
_STYLE = {
    "task_ok": "green",
    "task_changed": "yellow",
    "task_skipped": "dim",
    "task_failed": "bold red",
    "host_unreachable": "bold red",
    "resource_done": "green",
    "resource_failed": "bold red",
    "message": "magenta",
}
_LABEL = {
    "task_ok": "ok",
    "task_changed": "changed",
    "task_skipped": "skipped",
    "task_failed": "FAILED",
    "host_unreachable": "UNREACHABLE",
    "resource_done": "done",
    "resource_failed": "FAILED",
    "message": "note",
}


class LiveDisplay:
    """The current task or resource, the last results, and running counts; fed one DeployEvent at a time."""

    def __init__(self, console: Console, *, lines: int = 12) -> None:
        self._console = console
        self._recent: deque[Text] = deque(maxlen=lines)
        self._counts: Counter[str] = Counter()
        self._current = ""
        self._live = Live(self._render(), console=console, refresh_per_second=8, transient=False)

    def __enter__(self) -> LiveDisplay:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def update(self, event: DeployEvent) -> None:
        if event.kind == "step_started":
            self._current = f"{event.step}: {event.name}"
        elif event.kind in ("task_started", "resource_started"):
            where = f"[{event.role}] " if event.role else ""
            self._current = f"{event.step}: {where}{event.name} {event.message}".rstrip()
        elif event.kind in _LABEL:
            self._counts[_LABEL[event.kind]] += 1
            line = Text(f"{_LABEL[event.kind]:>11} ", style=_STYLE[event.kind])
            line.append(" ".join(part for part in (event.host, event.name) if part))
            if event.message and event.kind in ("task_failed", "host_unreachable", "message"):
                line.append(f"\n            {event.message.splitlines()[0]}", style="red")
            self._recent.append(line)
        self._live.update(self._render())

    def _render(self) -> Group:
        counts = "  ".join(f"{name} {n}" for name, n in sorted(self._counts.items())) or "starting"
        return Group(Text(self._current or "…", style="bold"), *self._recent, Text(counts, style="dim"))


def print_summary(console: Console, summary: DeploySummary) -> None:
    title = f"stack {summary.stack}" + (" (plan: nothing was changed)" if summary.plan else "")
    table = Table("part", "result", "counts", title=title)
    for step in summary.steps:
        counts = ", ".join(f"{name} {n}" for name, n in sorted(step.counts.items()) if n)
        table.add_row(step.step, "[green]ok[/green]" if step.ok else "[red]failed[/red]", counts or "-")
    console.print(table)
    for failure in summary.failures:
        where = f" on {failure.where}" if failure.where else ""
        console.print(f"[red]{failure.step}: {failure.what}{where} failed:[/red]\n{failure.message}")


def make_deploy_app() -> typer.Typer:
    """The `deploy` sub-app: add it with ``app.add_typer(make_deploy_app(), name="deploy")``."""
    app = typer.Typer(add_completion=False)

    @app.callback(invoke_without_command=True)
    def deploy_command(
        stack: Annotated[str, typer.Option(help="the Pulumi stack, and playbooks/inventories/<stack> for the hosts")],
        plan: Annotated[
            bool, typer.Option("--plan", help="show what would change (Ansible check mode, Pulumi preview)")
        ] = False,
        only: Annotated[
            list[str] | None,
            typer.Option(help="identity, secrets, hosts or gateway; repeat (or comma-separate) for several"),
        ] = None,
        inventory: Annotated[
            Path | None, typer.Option(help="Ansible inventory instead of playbooks/inventories/<stack>")
        ] = None,
        limit: Annotated[str | None, typer.Option(help="Ansible host pattern: deploy to these hosts only")] = None,
    ) -> None:
        """Deploy the stack: hosts with Ansible, then Keycloak, Vault and Kubernetes with Pulumi."""
        from gateway.deploy.driver import PARTS, DeployRequest, deploy
        from gateway.errors import ConfigurationError

        parts = {part.strip() for value in only or [] for part in value.split(",") if part.strip()}
        unknown = parts - set(PARTS)
        if unknown:
            raise typer.BadParameter(f"unknown part(s) {', '.join(sorted(unknown))}", param_hint="--only")
        request = DeployRequest(
            stack=stack,
            plan=plan,
            only=frozenset(p for p in PARTS if p in parts),
            inventory=inventory,
            limit=limit,
        )
        console = Console()
        try:
            with LiveDisplay(console) as display:
                summary = deploy(request, display.update)
        except ConfigurationError as exc:
            Console(stderr=True).print(f"[red]refusing to deploy:[/red] {exc.detail}")
            raise typer.Exit(EXIT_REFUSED) from exc
        print_summary(console, summary)
        if not summary.ok:
            raise typer.Exit(EXIT_FAILED)

    return app

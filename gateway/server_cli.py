"""The server's commands: ``antenna serve``, ``antenna dev`` and ``antenna config check``.

They join the client's ``antenna`` when the server is installed (``antenna-gateway[server]``; see
``gateway/cli/extensions.py``), and import the server only when run.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from gateway.cli.client import Profile, profile_path, save_profile
from gateway.cli.main import EXIT_FAILED, EXIT_REFUSED, JsonOpt, emit
from gateway.errors import AntennaError, ConfigurationError

ConfigOpt = Annotated[Path | None, typer.Option("--config", envvar="ANTENNA_CONFIG", help="the YAML configuration")]
out = Console()
err = Console(stderr=True)
_DEV_SWITCH = re.compile(r"^ANTENNA_DEV(ELOPMENT)?(_?MODE)?$", re.IGNORECASE)


def _refuse_dev_switch() -> None:
    """Development mode is not a setting: a variable that looks like a switch for it is refused, never ignored."""
    for name in sorted(os.environ):
        if _DEV_SWITCH.match(name):
            raise ConfigurationError(
                f"{name}: development mode cannot be enabled by configuration; only `antenna dev` runs it"
            )


def serve_app() -> typer.Typer:
    app = typer.Typer(add_completion=False)

    @app.command()
    def serve(config: ConfigOpt = None, host: str = "0.0.0.0", port: int = 8000) -> None:  # noqa: S104 - binds where told
        """Run the gateway (production): refuses development-only settings."""
        import uvicorn

        from gateway.app import create_app
        from gateway.logs import configure_logging
        from gateway.settings import load_settings

        try:
            _refuse_dev_switch()
            settings = load_settings(config)
            configure_logging(settings.logging)
            application = create_app(settings)
        except AntennaError as exc:
            err.print(f"[red]refusing to start:[/red]\n{escape(exc.detail)}")
            raise typer.Exit(EXIT_FAILED) from exc
        uvicorn.run(application, host=host, port=port, log_config=None, proxy_headers=True)

    return app


def _cli_for_another_terminal() -> str:
    """``antenna`` if a new terminal finds it on its PATH; else this script's full path.

    ``uv run`` (what ``make dev`` uses) puts the project's environment first on the PATH of this process
    only, so the bare name would not be found from a second terminal.
    """
    venv_bin = str(Path(sys.prefix) / "bin")
    plain_path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    if shutil.which("antenna", path=plain_path):
        return "antenna"
    return shlex.quote(shutil.which("antenna") or str(Path(venv_bin) / "antenna"))


def dev_app() -> typer.Typer:
    app = typer.Typer(add_completion=False)

    @app.command()
    def dev(
        data_dir: Annotated[Path, typer.Option(help="where the SQLite ledger, job output and dev keys live")] = Path(
            "var/dev"
        ),
        host: str = "127.0.0.1",
        port: int = 8000,
        config: ConfigOpt = None,
    ) -> None:
        """Everything on this machine: SQLite, the local connector, a development issuer with demo people."""
        import uvicorn

        from gateway.app import create_app
        from gateway.devmode import DEMO_PEOPLE, DEMO_PROJECT, EXAMPLE_JOB, RESEARCHER, dev_setup, dev_tokens, seed_demo
        from gateway.logs import configure_logging
        from gateway.runtime import build_runtime

        if host not in ("127.0.0.1", "localhost", "::1"):
            raise typer.BadParameter("antenna dev serves on loopback only", param_hint="--host")
        try:
            setup = dev_setup(data_dir.resolve(), host=host, port=port, config=config)
        except AntennaError as exc:
            err.print(f"[red]refusing to start:[/red]\n{escape(exc.detail)}")
            raise typer.Exit(EXIT_FAILED) from exc
        log_file = setup.mode.data_dir / "gateway.log"
        configure_logging(setup.settings.logging, stream=open(log_file, "a"))  # noqa: SIM115, PTH123 - lives as long as the server
        runtime = build_runtime(setup.settings, dev=setup.mode)
        seed_demo(runtime)
        tokens = dev_tokens(setup.mode)
        save_profile(
            Profile(
                url=setup.url,
                access_token=tokens["access_token"],
                refresh_token=tokens["refresh_token"],
                expires_at=time.time() + tokens["expires_in"],
                issuer=setup.settings.oidc.issuer,
                client_id=setup.settings.oidc.cli_client_id,
                token_endpoint=setup.settings.oidc.issuer.rstrip("/") + "/protocol/openid-connect/token",
            )
        )
        job = setup.mode.data_dir / "job.sh"
        job.write_text(EXAMPLE_JOB)
        site = next(iter(setup.settings.sites))
        cli = _cli_for_another_terminal()
        people = "\n".join(f"    {p.title:<40} {p.person}" for p in DEMO_PEOPLE)
        # Plain prints: each command stays on one line, to be copied as printed.
        print(
            f"Antenna (development) at {setup.url}    logs: {log_file}\n\n"
            f"You are signed in as {RESEARCHER.person} ({RESEARCHER.title}); the CLI keeps the session in "
            f"{profile_path()}.\nFrom another terminal, try:\n"
            f"  {cli} whoami\n"
            f"  {cli} submit --site {site} --project {DEMO_PROJECT} --partition small {shlex.quote(str(job))} --wait\n"
            f"  {cli} jobs\n"
            f"  {cli} balance --project {DEMO_PROJECT}\n\n"
            f"To be someone else, `{cli} login --url {setup.url}` and pick a person on the page it opens:\n{people}\n",
            flush=True,
        )
        uvicorn.run(create_app(setup.settings, dev=setup.mode, runtime=runtime), host=host, port=port, log_config=None)

    return app


def config_app() -> typer.Typer:
    app = typer.Typer(help="Configuration files.", no_args_is_help=True)

    @app.command("check")
    def config_check(
        file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
        dev_only: Annotated[bool, typer.Option("--dev", help="check for antenna dev")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Validate a configuration file as `antenna serve` would; every problem names its key."""
        from gateway.connectors.registry import check_sites
        from gateway.settings import load_settings

        try:
            if not dev_only:
                _refuse_dev_switch()
            settings = load_settings(file)
            if not dev_only:
                settings.check_production()
            check_sites(settings)
        except ConfigurationError as exc:
            if as_json:
                emit({"file": str(file), "ok": False, "problems": exc.detail.splitlines()}, True)
            else:
                err.print(f"[red]{escape(str(file))}: invalid[/red]\n{escape(exc.detail)}")
            raise typer.Exit(EXIT_REFUSED) from exc
        if as_json:
            emit({"file": str(file), "ok": True, "sites": sorted(settings.sites)}, True)
        else:
            out.print(f"{file}: ok ({len(settings.sites)} sites)")

    # A second command keeps `config` a group (`antenna config check FILE`), as it was.
    @app.callback()
    def config() -> None:
        """Configuration files."""

    return app

"""The commands that join ``antenna`` when the server or the operator tools are installed beside the client.

The client never imports them: a command here is loaded when it is called (or listed by ``--help``), and only
if its extra's libraries are present; without them it answers with the install command, in one line.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import typer
from typer._click.core import Command, Context
from typer._click.exceptions import ClickException
from typer.core import TyperGroup

DISTRIBUTION = "antenna-gateway"


@dataclass(frozen=True)
class Extension:
    extra: str  # the optional dependencies that bring it: `antenna-gateway[<extra>]`
    probe: str  # a module of that extra: present means installed
    target: str  # "module:factory" returning a Typer app
    help: str

    def installed(self) -> bool:
        return importlib.util.find_spec(self.probe) is not None

    def load(self, name: str) -> Command:
        module_name, factory = self.target.split(":")
        make: Callable[[], typer.Typer] = getattr(importlib.import_module(module_name), factory)
        command = typer.main.get_command(make())
        command.name = name
        command.help = command.help or self.help
        return command


SERVER = "server"
OPERATOR = "operator"
EXTENSIONS: dict[str, Extension] = {
    "serve": Extension(SERVER, "fastapi", "gateway.server_cli:serve_app", "Run the gateway (production)."),
    "dev": Extension(SERVER, "fastapi", "gateway.server_cli:dev_app", "Everything on this machine, with demo people."),
    "config": Extension(SERVER, "fastapi", "gateway.server_cli:config_app", "Check a gateway configuration file."),
    "deploy": Extension(
        OPERATOR,
        "pulumi",
        "gateway.deploy.cli:make_deploy_app",
        "Deploy the stack: Pulumi (identity, secrets, gateway), Ansible (hosts).",
    ),
    "realm": Extension(OPERATOR, "keycloak", "gateway.realm.cli:realm_app", "Check the live Keycloak realm."),
    "project": Extension(
        OPERATOR, "keycloak", "gateway.realm.cli:project_app", "Put people in or out of a project's group."
    ),
    "vault": Extension(OPERATOR, "hvac", "gateway.secrets.cli:vault_app", "Bootstrap a development Vault."),
}


def _not_installed(name: str, extension: Extension) -> Command:
    """A stand-in that says, in one line, what to install for ``antenna <name>``."""
    app = typer.Typer(add_completion=False)
    loose = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}

    @app.command(name=name, help=extension.help, context_settings=loose)
    def explain() -> None:
        missing = ClickException(
            f"`antenna {name}` comes with the {extension.extra} tools: "
            f"install {DISTRIBUTION}[{extension.extra}] (see the README)"
        )
        missing.exit_code = 2  # as a usage error, without pointing at a help this stand-in does not have
        raise missing

    return typer.main.get_command(app)


class AntennaGroup(TyperGroup):
    """The top-level ``antenna`` group: the client's commands, then the installed extensions'."""

    def list_commands(self, ctx: Context) -> list[str]:
        present = [name for name, ext in EXTENSIONS.items() if ext.installed()]
        return [*super().list_commands(ctx), *present]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        command = super().get_command(ctx, cmd_name)
        extension = EXTENSIONS.get(cmd_name)
        if command is not None or extension is None:
            return command
        if not extension.installed():
            return _not_installed(cmd_name, extension)
        try:
            return extension.load(cmd_name)
        except ImportError:  # a partial install: say what completes it rather than fail every command
            return _not_installed(cmd_name, extension)

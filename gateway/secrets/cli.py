"""``antenna vault ...``: prepare a development or test Vault, hand the gateway a wrapped secret-id, keep the
SSH roles' account lists. The Vault token comes from VAULT_TOKEN (or BAO_TOKEN), never from a flag."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import hvac
import hvac.exceptions
import typer

from gateway.errors import ConfigurationError
from gateway.secrets.bootstrap import (
    bootstrap,
    issue_wrapped_secret_id,
    read_role_id,
    ssh_ca_public_key,
    sync_site_accounts,
)
from gateway.secrets.settings import VaultClientOptions
from gateway.settings import Settings, load_settings

ConfigOption = Annotated[
    Path | None, typer.Option("--config", envvar="ANTENNA_CONFIG", help="the gateway's YAML configuration")
]


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigurationError as exc:
        typer.echo(f"configuration: {exc.detail}", err=True)
        raise typer.Exit(2) from exc


def _client(settings: Settings) -> hvac.Client:
    token = os.environ.get("VAULT_TOKEN") or os.environ.get("BAO_TOKEN")
    if not token:
        typer.echo("set VAULT_TOKEN (or BAO_TOKEN) to a token allowed to configure Vault", err=True)
        raise typer.Exit(2)
    return hvac.Client(url=settings.vault.address, token=token, verify=settings.vault.ca_cert or True)


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"Vault refused: {type(exc).__name__}: {exc}", err=True)
    return typer.Exit(1)


def _parse_accounts(values: list[str]) -> dict[str, list[str]]:
    accounts: dict[str, list[str]] = {}
    for value in values:
        site, sep, account = value.partition(":")
        if not sep or not site or not account:
            raise typer.BadParameter(f"{value!r}: expected SITE:ACCOUNT")
        accounts.setdefault(site, []).append(account)
    return accounts


def bootstrap_command(
    config: ConfigOption = None,
    policies_dir: Annotated[Path, typer.Option(help="the policy files")] = Path("policies/vault"),
    account: Annotated[
        list[str] | None, typer.Option(help="SITE:ACCOUNT the site's SSH role may sign for (repeatable)")
    ] = None,
    example_credentials: Annotated[
        bool, typer.Option(help="write random example site credentials where none exist")
    ] = True,
) -> None:
    """Enable engines, load policies, create the AppRole, SSH CA and roles; print what changed."""
    settings = _settings(config)
    try:
        changes = bootstrap(
            _client(settings),
            settings,
            policies_dir,
            options=VaultClientOptions(),
            site_accounts=_parse_accounts(account or []),
            example_credentials=example_credentials,
        )
    except ConfigurationError as exc:
        typer.echo(exc.detail, err=True)
        raise typer.Exit(2) from exc
    except (hvac.exceptions.VaultError, OSError) as exc:
        raise _fail(exc) from exc
    for change in changes:
        typer.echo(str(change))
    if not changes:
        typer.echo("nothing to change: Vault is already bootstrapped")


def issue_secret_id(
    out: Annotated[Path, typer.Option(help="file the gateway reads (vault.wrapped_secret_id_file)")],
    config: ConfigOption = None,
    wrap_ttl: Annotated[int, typer.Option(help="seconds the wrapping token lives")] = 300,
) -> None:
    """Write a response-wrapped secret-id for the gateway's AppRole (mode 0600)."""
    settings = _settings(config)
    try:
        wrapping = issue_wrapped_secret_id(_client(settings), wrap_ttl_seconds=wrap_ttl)
    except (hvac.exceptions.VaultError, OSError) as exc:
        raise _fail(exc) from exc
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(wrapping + "\n")
    out.chmod(0o600)  # an existing file keeps its mode on open
    typer.echo(f"wrote a wrapped secret-id to {out} (valid {wrap_ttl} s, single use)")


def role_id(config: ConfigOption = None) -> None:
    """Print the gateway AppRole's role-id (for vault.role_id; useless without a secret-id)."""
    settings = _settings(config)
    try:
        typer.echo(read_role_id(_client(settings)))
    except (hvac.exceptions.VaultError, OSError) as exc:
        raise _fail(exc) from exc


def sync_accounts(
    site: Annotated[str, typer.Argument(help="the site (its SSH role has the same name)")],
    accounts: Annotated[list[str], typer.Argument(help="every account the role may sign for")],
    config: ConfigOption = None,
) -> None:
    """Set the site accounts Vault may sign SSH certificates for at SITE."""
    settings = _settings(config)
    try:
        changes = sync_site_accounts(_client(settings), settings.vault, site, accounts)
    except (hvac.exceptions.VaultError, OSError) as exc:
        raise _fail(exc) from exc
    typer.echo("\n".join(map(str, changes)) or "nothing to change")


def ca_public_key(config: ConfigOption = None) -> None:
    """Print the SSH CA's public key, for the sites' sshd TrustedUserCAKeys."""
    settings = _settings(config)
    try:
        key = ssh_ca_public_key(_client(settings), settings.vault)
    except (hvac.exceptions.VaultError, OSError) as exc:
        raise _fail(exc) from exc
    if key is None:
        typer.echo("no SSH CA yet: run `antenna vault bootstrap`", err=True)
        raise typer.Exit(1)
    typer.echo(key)


def vault_app() -> typer.Typer:
    """The ``vault`` sub-command group; the caller adds it with ``app.add_typer(vault_app(), name="vault")``."""
    app = typer.Typer(help="Prepare a development/test Vault and hand the gateway its identity.")
    app.command("bootstrap")(bootstrap_command)
    app.command("issue-secret-id")(issue_secret_id)
    app.command("role-id")(role_id)
    app.command("sync-accounts")(sync_accounts)
    app.command("ca-public-key")(ca_public_key)
    return app

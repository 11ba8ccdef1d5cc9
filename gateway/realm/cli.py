"""`antenna realm check` and `antenna project add-member / remove-member`, as typer sub-apps for the main CLI.

The admin client's secret is read from ANTENNA_KEYCLOAK_ADMIN_SECRET only, never from an option (options
show in the process list and shell history). Exit codes follow the main CLI: 0 ok (realm compliant),
1 failed or differences found, 2 usage, 3 refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from typing import Annotated

import typer
from keycloak import KeycloakAdmin
from rich.console import Console
from rich.table import Table

from gateway.errors import AntennaError, InvalidRequest
from gateway.realm.admin import connect_admin
from gateway.realm.check import check_realm
from gateway.realm.contract import RealmContract
from gateway.realm.membership import MembershipChange, add_member, remove_member

SECRET_ENV = "ANTENNA_KEYCLOAK_ADMIN_SECRET"  # noqa: S105 - the variable's name, not a secret
EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 1, 2, 3

UrlOpt = Annotated[str, typer.Option("--keycloak-url", envvar="ANTENNA_KEYCLOAK_URL", help="Keycloak's base URL")]
ClientOpt = Annotated[
    str,
    typer.Option("--admin-client", envvar="ANTENNA_KEYCLOAK_ADMIN_CLIENT", help="service-account client id"),
]
AdminRealmOpt = Annotated[
    str, typer.Option("--admin-realm", envvar="ANTENNA_KEYCLOAK_ADMIN_REALM", help="the admin client's realm")
]
RealmOpt = Annotated[str, typer.Option("--realm", help="the Antenna's realm")]
CaOpt = Annotated[
    str | None, typer.Option("--ca-bundle", envvar="ANTENNA_KEYCLOAK_CA_BUNDLE", help="CA file for Keycloak's TLS")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _admin(url: str, client: str, admin_realm: str, realm: str, ca_bundle: str | None) -> KeycloakAdmin:
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] set {SECRET_ENV} to the admin client's secret")
        raise typer.Exit(EXIT_USAGE)
    return connect_admin(
        url,
        client_id=client,
        client_secret=secret,
        realm=realm,
        admin_realm=admin_realm,
        verify=ca_bundle if ca_bundle else True,
    )


def _exit_for(exc: AntennaError) -> typer.Exit:
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {exc.detail}")
    if isinstance(exc, InvalidRequest):
        return typer.Exit(EXIT_USAGE)
    return typer.Exit(EXIT_REFUSED if exc.status in (403, 404, 409) else EXIT_FAILED)


def realm_app() -> typer.Typer:
    """`antenna realm ...`: mount with `app.add_typer(realm_app(), name="realm")`."""
    app = typer.Typer(help="The Keycloak realm behind the Antenna.", no_args_is_help=True)

    @app.callback()
    def realm() -> None:
        """The Keycloak realm behind the Antenna (a group, so that more commands can join `check`)."""

    @app.command("check")
    def check(
        keycloak_url: UrlOpt,
        admin_client: ClientOpt = "antenna-admin",
        admin_realm: AdminRealmOpt = "master",
        realm: RealmOpt = "antenna",
        ca_bundle: CaOpt = None,
        issuer: Annotated[
            str, typer.Option("--issuer", help="the MyAccessID issuer the realm must trust")
        ] = RealmContract.issuer,
        allow_stored_idp_secret: Annotated[
            bool,
            typer.Option(
                "--allow-stored-idp-secret",
                help="accept the MyAccessID client secret stored in Keycloak (development stacks)",
            ),
        ] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """List every realm setting that differs from the identity contract (exit 1 if any)."""
        contract = replace(
            RealmContract(), realm=realm, issuer=issuer, require_vault_client_secret=not allow_stored_idp_secret
        )
        try:
            differences = check_realm(_admin(keycloak_url, admin_client, admin_realm, realm, ca_bundle), contract)
        except AntennaError as exc:
            raise _exit_for(exc) from exc
        out = Console(soft_wrap=True)
        if as_json:
            out.print_json(json.dumps([asdict(d) for d in differences]))
        elif not differences:
            out.print(f"realm {realm}: every checked setting matches the identity contract")
        else:
            table = Table("setting", "expected", "found", title=f"realm {realm}: {len(differences)} difference(s)")
            for d in differences:
                table.add_row(d.setting, d.expected, d.actual)
            out.print(table)
        if differences:
            raise typer.Exit(EXIT_FAILED)

    return app


def project_app() -> typer.Typer:
    """`antenna project ...`: mount with `app.add_typer(project_app(), name="project")`."""
    app = typer.Typer(help="Project membership in Keycloak (projects not managed by entitlements).")

    def report(change: MembershipChange, verb: str, as_json: bool) -> None:
        out = Console(soft_wrap=True)
        if as_json:
            out.print_json(json.dumps(asdict(change)))
        elif change.changed:
            for path in (*change.added, *change.removed):
                out.print(f"{change.person}: {verb} {path}")
        else:
            out.print(f"{change.person}: nothing to change in project {change.project}")

    @app.command("add-member")
    def add(
        project: Annotated[str, typer.Argument(help="project name")],
        person: Annotated[str, typer.Argument(help="MyAccessID identifier (the Keycloak username)")],
        keycloak_url: UrlOpt,
        pi: Annotated[bool, typer.Option("--pi", help="also the project's principal investigator")] = False,
        admin_client: ClientOpt = "antenna-admin",
        admin_realm: AdminRealmOpt = "master",
        realm: RealmOpt = "antenna",
        ca_bundle: CaOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Put a person in a project (and its PI group with --pi)."""
        try:
            admin = _admin(keycloak_url, admin_client, admin_realm, realm, ca_bundle)
            change = add_member(admin, person, project, pi=pi, contract=replace(RealmContract(), realm=realm))
        except AntennaError as exc:
            raise _exit_for(exc) from exc
        report(change, "joined", as_json)

    @app.command("remove-member")
    def remove(
        project: Annotated[str, typer.Argument(help="project name")],
        person: Annotated[str, typer.Argument(help="MyAccessID identifier (the Keycloak username)")],
        keycloak_url: UrlOpt,
        pi: Annotated[bool, typer.Option("--pi", help="remove only the PI role, keep the membership")] = False,
        admin_client: ClientOpt = "antenna-admin",
        admin_realm: AdminRealmOpt = "master",
        realm: RealmOpt = "antenna",
        ca_bundle: CaOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Take a person out of a project (or only out of its PI group with --pi)."""
        try:
            admin = _admin(keycloak_url, admin_client, admin_realm, realm, ca_bundle)
            change = remove_member(admin, person, project, pi=pi, contract=replace(RealmContract(), realm=realm))
        except AntennaError as exc:
            raise _exit_for(exc) from exc
        report(change, "left", as_json)

    return app

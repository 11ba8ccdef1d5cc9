"""Short-lived PostgreSQL credentials from Vault's database secrets engine, and the SQLAlchemy hook that
opens every new connection with the credentials current at that moment.

The engine URL carries host, port and database only; user and password come from ``current()`` of a
``DatabaseCredentialSource`` (``VaultSecretStore`` is one) in SQLAlchemy's ``do_connect`` event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import hvac
from sqlalchemy import event
from sqlalchemy.engine import Engine


@dataclass(frozen=True)
class DatabaseCredentials:
    username: str
    password: str = field(repr=False)
    lease_id: str = field(repr=False)
    lease_seconds: int
    issued_at: datetime

    @property
    def expires_at(self) -> datetime:
        return self.issued_at + timedelta(seconds=self.lease_seconds)


class DatabaseCredentialSource(Protocol):
    def current_database_credentials(self) -> DatabaseCredentials:
        """The credentials to open a connection with now; no I/O. Raises SecretsUnavailable."""
        ...


def use_dynamic_credentials(engine: Engine, source: DatabaseCredentialSource) -> None:
    """Make every new connection of ``engine`` log in with ``source``'s current credentials.

    ``source.current_database_credentials()`` does no I/O, so this is safe wherever SQLAlchemy connects.
    Pair it with ``pool_pre_ping=True`` and ``pool_recycle=pool_recycle_seconds(...)`` so connections
    opened with rotated-out credentials are replaced before Vault revokes them.
    """

    def _inject(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        credentials = source.current_database_credentials()
        cparams["user"] = credentials.username
        cparams["password"] = credentials.password

    event.listen(engine, "do_connect", _inject)


def pool_recycle_seconds(lease_seconds: int, refresh_fraction: float) -> int:
    """A pool recycle time that retires a connection before its credentials' lease ends.

    New credentials arrive after ``refresh_fraction`` of the lease; a connection opened just before that
    has the rest of the lease to live, and half of it leaves a margin.
    """
    return max(int(lease_seconds * (1 - refresh_fraction) / 2), 30)


@dataclass(frozen=True)
class PostgresRole:
    """How Vault creates the gateway's login roles: members of ``group_role``, which owns the gateway's
    schema and nothing else; each session acts as the group, so objects it creates outlive the login."""

    name: str = "antenna-gateway"
    group_role: str = "antenna_app"
    default_ttl_seconds: int = 3600
    max_ttl_seconds: int = 86400

    def creation_statements(self) -> list[str]:
        return [
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
            f"VALID UNTIL '{{{{expiration}}}}' IN ROLE \"{self.group_role}\";",
            f"ALTER ROLE \"{{{{name}}}}\" SET role = '{self.group_role}';",
        ]

    def revocation_statements(self) -> list[str]:
        # End the sessions first: a dropped role's open sessions would otherwise keep working.
        return [
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}';",
            'DROP ROLE IF EXISTS "{{name}}";',
        ]


def configure_postgres(
    client: hvac.Client,
    *,
    mount: str,
    connection_name: str,
    host: str,
    port: int,
    database: str,
    username: str,
    password: str,
    role: PostgresRole,
    sslmode: str = "require",
) -> None:
    """Point the database engine at PostgreSQL and define the gateway's role (operator or bootstrap step).

    ``username`` needs CREATEROLE, membership with admin option in ``role.group_role`` and
    ``pg_signal_backend``. Vault stores ``password`` and never returns it.
    """
    client.secrets.database.configure(
        name=connection_name,
        plugin_name="postgresql-database-plugin",
        mount_point=mount,
        allowed_roles=[role.name],
        connection_url=(f"postgresql://{{{{username}}}}:{{{{password}}}}@{host}:{port}/{database}?sslmode={sslmode}"),
        username=username,
        password=password,
        password_authentication="scram-sha-256",  # noqa: S106 - a method name
    )
    client.secrets.database.create_role(
        name=role.name,
        db_name=connection_name,
        creation_statements=role.creation_statements(),
        revocation_statements=role.revocation_statements(),
        default_ttl=role.default_ttl_seconds,
        max_ttl=role.max_ttl_seconds,
        mount_point=mount,
    )

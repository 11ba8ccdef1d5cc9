"""Short-lived PostgreSQL credentials from Vault's database engine, against the machine's PostgreSQL.

What is tested: the issued login role can work in the gateway's schema and nowhere else (no other schema,
not `public`, no superuser/createrole/createdb); new connections of a SQLAlchemy engine use rotated
credentials; revoking a lease (what Vault does at its expiry, or with the gateway's token) ends the role's
sessions and drops the role.

What is not: this PostgreSQL uses `trust` authentication, so it accepts any password; the passwords Vault
generates and `VALID UNTIL` are therefore not enforced here (production uses scram-sha-256). Lease expiry
itself is time-based; the tests revoke the lease, which runs the same revocation statements.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
import psycopg
import pytest
from psycopg import sql
from sqlalchemy import create_engine, text

from gateway.clock import FakeClock
from gateway.secrets.bootstrap import AppRoleSpec
from gateway.secrets.database import (
    DatabaseCredentials,
    PostgresRole,
    configure_postgres,
    pool_recycle_seconds,
    use_dynamic_credentials,
)
from gateway.secrets.metrics import Event
from tests.support.openbao import OpenBao
from tests.vault.support import VaultEnv, make_env

pytestmark = pytest.mark.postgres

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class Database:
    admin: psycopg.Connection[tuple[object, ...]]
    group: str
    schema: str
    other_schema: str
    env: VaultEnv

    def connect_as(self, creds: DatabaseCredentials) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1",
            port=5432,
            dbname="test",
            user=creds.username,
            password=creds.password,
            autocommit=True,
        )

    def role_exists(self, name: str) -> bool:
        return self.admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is not None


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 (db test, trust auth) is needed and not reachable: {exc}")


def _setup(openbao: OpenBao, tmp: Path, approle: AppRoleSpec | None = None) -> Iterator[Database]:
    sfx = uuid.uuid4().hex[:8]
    group, schema, other = f"antenna_app_{sfx}", f"antenna_{sfx}", f"other_{sfx}"
    vault_admin, password = f"vault_admin_{sfx}", secrets.token_urlsafe(24)
    admin = _admin()
    ident = sql.Identifier
    for statement in (
        sql.SQL("CREATE ROLE {} NOLOGIN").format(ident(group)),
        sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(ident(schema), ident(group)),
        sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(ident(vault_admin), sql.Literal(password)),
        sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(ident(group), ident(vault_admin)),
        sql.SQL("GRANT pg_signal_backend TO {}").format(ident(vault_admin)),
        sql.SQL("CREATE SCHEMA {}").format(ident(other)),
        sql.SQL("CREATE TABLE {}.payroll (amount int)").format(ident(other)),
    ):
        admin.execute(statement)
    role = f"gw-{sfx}"
    env = make_env(openbao, tmp, approle=approle, database_role=role)
    configure_postgres(
        env.root,
        mount=env.vault.database_mount,
        connection_name="antenna",
        host="127.0.0.1",
        port=5432,
        database="test",
        username=vault_admin,
        password=password,
        role=PostgresRole(name=role, group_role=group, default_ttl_seconds=300, max_ttl_seconds=900),
        sslmode="disable",
    )
    try:
        yield Database(admin, group, schema, other, env)
    finally:
        env.root.sys.revoke_prefix(f"{env.vault.database_mount}/creds/{role}")
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident(schema)))
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident(other)))
        leftovers = admin.execute(
            "SELECT m.rolname FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid"
            " JOIN pg_roles m ON m.oid = a.member WHERE g.rolname = %s AND m.rolname <> %s",
            (group, vault_admin),
        ).fetchall()
        for (name,) in leftovers:
            admin.execute(sql.SQL("DROP ROLE {}").format(ident(str(name))))
        admin.execute(sql.SQL("DROP ROLE {}").format(ident(vault_admin)))
        admin.execute(sql.SQL("DROP ROLE {}").format(ident(group)))
        admin.close()


@pytest.fixture
def database(openbao: OpenBao, tmp_path: Path) -> Iterator[Database]:
    yield from _setup(openbao, tmp_path)


@pytest.mark.anyio
async def test_issued_role_works_in_the_gateway_schema_and_nowhere_else(database: Database) -> None:
    store = database.env.store(clock=FakeClock(datetime.now(UTC)))
    creds = await store.database_credentials()
    assert creds.lease_seconds == 300
    assert creds.password not in repr(creds)
    with database.connect_as(creds) as conn:
        assert conn.execute("SELECT session_user, current_user").fetchone() == (creds.username, database.group)
        conn.execute(f'CREATE TABLE "{database.schema}".jobs (id int)')
        conn.execute(f'INSERT INTO "{database.schema}".jobs VALUES (1)')
        assert conn.execute(f'SELECT count(*) FROM "{database.schema}".jobs').fetchone() == (1,)
        for statement in (
            f'SELECT * FROM "{database.other_schema}".payroll',
            "CREATE TABLE public.intruder (x int)",
            "CREATE ROLE sneaky",
            "CREATE DATABASE sneaky",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    flags = database.admin.execute(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolvaliduntil IS NOT NULL"
        " FROM pg_roles WHERE rolname = %s",
        (creds.username,),
    ).fetchone()
    assert flags == (False, False, False, False, True)
    # The table belongs to the group role, so dropping the login role later leaves it in place.
    owner = database.admin.execute(
        "SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = 'jobs'", (database.schema,)
    ).fetchone()
    assert owner == (database.group,)


@pytest.mark.anyio
async def test_engine_uses_rotated_credentials_and_revocation_ends_the_old_role(database: Database) -> None:
    clock = FakeClock(datetime.now(UTC))
    store = database.env.store(clock=clock)
    first = await store.database_credentials()
    engine = create_engine(
        "postgresql+psycopg://127.0.0.1:5432/test",
        pool_pre_ping=True,
        pool_recycle=pool_recycle_seconds(first.lease_seconds, 2 / 3),
    )
    use_dynamic_credentials(engine, store)
    try:
        old = engine.connect()
        assert old.execute(text("SELECT session_user")).scalar() == first.username
        clock.advance(210)  # past 2/3 of the 300 s lease
        second = await store.database_credentials()
        assert second.username != first.username
        with engine.connect() as new:
            assert new.execute(text("SELECT session_user")).scalar() == second.username
        assert old.execute(text("SELECT 1")).scalar() == 1  # the old login still works until revoked
        database.env.root.sys.revoke_lease(first.lease_id)  # what Vault does when the lease ends
        assert not database.role_exists(first.username)
        with pytest.raises(Exception, match="terminat"):
            old.execute(text("SELECT 1"))
        old.invalidate()
        old.close()
        with pytest.raises(psycopg.OperationalError, match="does not exist"):
            database.connect_as(first)
        for _ in range(3):  # the pool replaces dead connections with ones for the current role
            with engine.connect() as conn:
                assert conn.execute(text("SELECT session_user")).scalar() == second.username
    finally:
        engine.dispose()


@pytest.mark.anyio
async def test_revoked_gateway_token_takes_its_database_logins_and_upkeep_gets_new_ones(
    openbao: OpenBao, tmp_path: Path
) -> None:
    setup = _setup(openbao, tmp_path, approle=AppRoleSpec(secret_id_num_uses=0))
    database = next(setup)
    try:
        clock = FakeClock(datetime.now(UTC))
        store = database.env.store(clock=clock)
        first = await store.database_credentials()
        assert store._token is not None
        database.env.root.auth.token.revoke_accessor(store._token.accessor)
        await store.maintain()  # notices, logs in again, fetches new credentials
        current = store.current_database_credentials()
        assert current.username != first.username
        assert database.role_exists(current.username)
        assert store.metrics.total(Event.LOGIN) == 2
        # Vault revokes the dead token's leases in the background: wait for it (bounded), never for time.
        for _ in range(150):
            if not database.role_exists(first.username):
                break
            await anyio.sleep(0.1)
        else:
            pytest.fail("Vault did not drop the database role of the revoked token's lease within 15 s")
    finally:
        next(setup, None)


def test_start_up_fetch_before_the_event_loop_builds_a_working_engine(database: Database) -> None:
    """What build_runtime does before migrations: no event loop yet, so the blocking variant."""
    store = database.env.store()
    creds = store.database_credentials_blocking()
    engine = create_engine("postgresql+psycopg://127.0.0.1:5432/test", pool_pre_ping=True)
    use_dynamic_credentials(engine, store)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT session_user")).scalar() == creds.username
            conn.execute(text(f'CREATE TABLE "{database.schema}".alembic_version (v text)'))
            conn.commit()
    finally:
        engine.dispose()
    assert store.current_database_credentials() == creds

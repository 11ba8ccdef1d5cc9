"""SSH user certificates from Vault's SSH engine: one principal, the mapped account, refused otherwise by
Vault itself (the site's role and the gateway policy), and accepted by an SSH server trusting the CA.

The SSH server here is asyncssh's, in-process; OpenSSH's sshd with TrustedUserCAKeys is exercised by the
test stack (tests/stack) through the ssh connector.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncssh
import hvac
import hvac.exceptions
import pytest

from gateway.clock import FakeClock
from gateway.errors import SiteAuthFailed
from gateway.secrets.bootstrap import ssh_ca_public_key, sync_site_accounts
from gateway.secrets.metrics import Event
from gateway.secrets.ssh import parse_certificate
from tests.vault.support import VaultEnv


def _keypair() -> tuple[asyncssh.SSHKey, str]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    public: bytes = key.export_public_key("openssh")
    return key, public.decode()


@pytest.mark.anyio
async def test_certificate_has_the_account_as_only_principal_and_no_extensions(
    vault_env: VaultEnv,
) -> None:
    _, public = _keypair()
    store = vault_env.store()
    text = await store.sign_ssh_key(site="lucia", account="alice", public_key=public)
    cert = parse_certificate(text)
    assert cert.valid_principals == [b"alice"]
    assert cert.extensions == {}
    assert cert.critical_options == {}
    assert cert.valid_before - cert.valid_after <= 600 + 60  # our ttl plus Vault's 30 s backdating
    ca = ssh_ca_public_key(vault_env.root, vault_env.vault)
    assert ca is not None
    assert asyncssh.import_certificate(text).signing_key == asyncssh.import_public_key(ca)


@pytest.mark.anyio
async def test_vault_refuses_an_account_the_site_role_does_not_allow(vault_env: VaultEnv) -> None:
    _, public = _keypair()
    store = vault_env.store()
    with pytest.raises(SiteAuthFailed, match="does not allow account bob"):
        await store.sign_ssh_key(site="lucia", account="bob", public_key=public)
    assert store.metrics.total(Event.SSH_REFUSED) == 1
    # The operator maps bob at lucia; signing works without a restart.
    sync_site_accounts(vault_env.root, vault_env.vault, "lucia", ["alice", "bob"])
    text = await store.sign_ssh_key(site="lucia", account="bob", public_key=public)
    assert parse_certificate(text).valid_principals == [b"bob"]


def test_the_gateway_policy_refuses_several_principals_host_certs_and_extensions(
    vault_env: VaultEnv,
) -> None:
    """Straight to Vault with a token holding the gateway policy: no gateway code to rely on."""
    sync_site_accounts(vault_env.root, vault_env.vault, "lucia", ["alice", "bob"])
    token = vault_env.root.auth.token.create(policies=[vault_env.gateway_policy], no_default_policy=True, ttl="5m")[
        "auth"
    ]["client_token"]
    gateway = hvac.Client(url=vault_env.server.address, token=token)
    path = f"{vault_env.vault.ssh_mount}/sign/lucia"
    _, public = _keypair()
    ok = gateway.write_data(path, data={"public_key": public, "valid_principals": "alice"})
    assert parse_certificate(ok["data"]["signed_key"]).valid_principals == [b"alice"]
    refused = [
        {"public_key": public, "valid_principals": "alice,bob"},  # two mapped accounts at once
        {"public_key": public},  # the role's default principal
        {"public_key": public, "valid_principals": "alice", "cert_type": "host"},
        {"public_key": public, "valid_principals": "alice", "extensions": {"permit-pty": ""}},
        {"public_key": public, "valid_principals": "alice", "critical_options": {"force-command": "x"}},
    ]
    for data in refused:
        with pytest.raises(hvac.exceptions.Forbidden):
            gateway.write_data(path, data=data)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="root is not a valid value"):
        gateway.write_data(path, data={"public_key": public, "valid_principals": "root"})
    with pytest.raises(hvac.exceptions.Forbidden):  # generating key pairs is not the gateway's
        gateway.write_data(f"{vault_env.vault.ssh_mount}/issue/lucia", data={"valid_principals": "alice"})


@pytest.mark.anyio
async def test_malformed_accounts_never_reach_vault(vault_env: VaultEnv) -> None:
    _, public = _keypair()
    store = vault_env.store()
    for account in ("alice,bob", "root ", "", "Alice", "a" * 40):
        with pytest.raises(SiteAuthFailed):
            await store.sign_ssh_key(site="lucia", account=account, public_key=public)
    assert store.metrics.total(Event.LOGIN) == 0


@pytest.mark.anyio
async def test_a_certificate_is_reused_until_its_refresh_point(vault_env: VaultEnv) -> None:
    clock = FakeClock(datetime.now(UTC))  # certificates carry real times
    _, public = _keypair()
    store = vault_env.store(clock=clock)
    first = await store.sign_ssh_key(site="lucia", account="alice", public_key=public)
    clock.advance(60)
    assert await store.sign_ssh_key(site="lucia", account="alice", public_key=public) == first
    clock.advance(400)  # 600 s certificates (plus 30 s backdating) are renewed after 2/3 of that
    second = await store.sign_ssh_key(site="lucia", account="alice", public_key=public)
    assert second != first
    assert store.metrics.total(Event.SSH_SIGNED) == 2


@pytest.mark.anyio
async def test_an_ssh_server_trusting_the_ca_lets_in_the_account_and_nobody_else(
    vault_env: VaultEnv,
) -> None:
    ca = ssh_ca_public_key(vault_env.root, vault_env.vault)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        authorized_client_keys=asyncssh.import_authorized_keys(f"cert-authority {ca}\n"),
    )
    port = server.sockets[0].getsockname()[1]
    key, public = _keypair()
    cert = asyncssh.import_certificate(
        await vault_env.store().sign_ssh_key(site="lucia", account="alice", public_key=public)
    )
    try:
        async with asyncssh.connect(
            "127.0.0.1", port, username="alice", client_keys=[(key, cert)], known_hosts=None
        ) as conn:
            assert conn.get_extra_info("username") == "alice"
        with pytest.raises(asyncssh.PermissionDenied):
            await asyncssh.connect("127.0.0.1", port, username="bob", client_keys=[(key, cert)], known_hosts=None)
    finally:
        server.close()
        await server.wait_closed()

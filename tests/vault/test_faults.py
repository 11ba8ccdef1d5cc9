"""Vault faults against a real OpenBao of the tests' own (sealed, paused) and the shared one: cached
credentials serve until their TTL, then SecretsUnavailable with the reason (never another exception);
recovery needs no restart; a revoked token, a dead secret-id or a narrowed policy are logged and counted,
with back-off instead of a retry storm.

Secret-id expiry is time-based in Vault; here the secret-id is destroyed by its accessor instead, which
makes Vault give the login the same answer without waiting for a clock.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.errors import SecretsUnavailable
from gateway.secrets.bootstrap import AppRoleSpec
from gateway.secrets.metrics import Event, Reason
from tests.support.openbao import OpenBao
from tests.vault.support import OwnOpenBao, VaultEnv, make_env


def _clock() -> FakeClock:
    return FakeClock(datetime.now(UTC))


@pytest.mark.anyio
async def test_sealed_cached_until_ttl_then_unavailable_then_recovers_without_restart(
    own_openbao: OwnOpenBao, tmp_path: Path
) -> None:
    env = make_env(own_openbao.server, tmp_path)
    env.put_site("lumi", {"jwt_key": "before-seal"})
    clock = _clock()
    store = env.store(clock=clock)
    assert (await store.site_credentials("lumi")).get("jwt_key") == "before-seal"
    own_openbao.seal()
    try:
        status = await store.status()
        assert (status.ok, status.reason) == (False, Reason.SEALED)
        clock.advance(45)  # past the refresh point (40 s), inside the TTL (60 s)
        assert (await store.site_credentials("lumi")).get("jwt_key") == "before-seal"
        assert store.metrics.counts[(Event.STALE_SERVED, Reason.SEALED)] == 1
        clock.advance(20)
        with pytest.raises(SecretsUnavailable) as info:
            await store.site_credentials("lumi")
        assert info.value.extra["reason"] == "sealed"
        assert info.value.status == 503
        assert "credentials of site lumi" in info.value.detail
    finally:
        own_openbao.unseal()
    env.put_site("lumi", {"jwt_key": "after-unseal"})
    await store.check()  # the readiness probe sees Vault back
    assert (await store.site_credentials("lumi")).get("jwt_key") == "after-unseal"
    assert store.metrics.total(Event.LOGIN) == 1  # the token outlived the seal


@pytest.mark.anyio
async def test_unreachable_cached_until_ttl_then_unavailable_then_recovers(
    own_openbao: OwnOpenBao, tmp_path: Path
) -> None:
    env = make_env(own_openbao.server, tmp_path, options={"request_timeout_seconds": 0.5})
    env.put_site("lumi", {"jwt_key": "cached"})
    clock = _clock()
    store = env.store(clock=clock)
    await store.site_credentials("lumi")
    own_openbao.pause()
    try:
        clock.advance(45)
        assert (await store.site_credentials("lumi")).get("jwt_key") == "cached"
        clock.advance(20)
        with pytest.raises(SecretsUnavailable) as info:
            await store.site_credentials("lumi")
        assert info.value.extra["reason"] == "unreachable"
        with pytest.raises(SecretsUnavailable, match="unreachable"):
            await store.check()
    finally:
        own_openbao.resume()
    # Vault answers again, but for the 5 s after a failure the store does not ask it (no request
    # waits for a timeout during an outage): still refused...
    with pytest.raises(SecretsUnavailable, match="unreachable"):
        await store.site_credentials("lumi")
    clock.advance(5)  # ...then served again, with no readiness probe or restart in between
    assert (await store.site_credentials("lumi")).get("jwt_key") == "cached"
    await store.check()


@pytest.mark.anyio
async def test_revoked_token_with_a_single_use_secret_id_waits_for_a_new_one(
    vault_env: VaultEnv, caplog: pytest.LogCaptureFixture
) -> None:
    vault_env.put_site("lumi", {"jwt_key": "k"})
    clock = _clock()
    store = vault_env.store(clock=clock)
    await store.site_credentials("lumi")
    assert store._token is not None
    vault_env.root.auth.token.revoke_accessor(store._token.accessor)  # an operator cuts it off
    clock.advance(45)
    caplog.set_level(logging.WARNING, logger="gateway.secrets")
    assert (await store.site_credentials("lumi")).get("jwt_key") == "k"  # cached, inside TTL
    assert "refused the gateway's token" in caplog.text
    assert "reason=secret_id_invalid" in caplog.text
    assert store.metrics.counts[(Event.RENEW_FAILURE, Reason.TOKEN_INVALID)] == 1
    assert store.metrics.counts[(Event.LOGIN_FAILURE, Reason.SECRET_ID_INVALID)] == 1
    clock.advance(20)  # past the TTL and the 10 s back-off: one more login attempt, then 20 s
    for _ in range(5):  # a clear 503 each time, and no login storm while backing off
        with pytest.raises(SecretsUnavailable) as info:
            await store.site_credentials("lumi")
        assert info.value.extra["reason"] == "secret_id_invalid"
    assert store.metrics.total(Event.LOGIN_FAILURE) == 2
    assert caplog.text.count("no valid cached credentials of site lumi") == 1  # once per outage
    vault_env.deliver_secret_id()  # the deploy step hands over a new one
    clock.advance(20)
    assert (await store.site_credentials("lumi")).get("jwt_key") == "k"
    assert store.metrics.total(Event.LOGIN) == 2


@pytest.mark.anyio
async def test_revoked_token_with_a_reusable_secret_id_logs_in_again_transparently(
    openbao: OpenBao, tmp_path: Path
) -> None:
    env = make_env(openbao, tmp_path, approle=AppRoleSpec(secret_id_num_uses=0))
    env.put_site("lumi", {"jwt_key": "k"})
    clock = _clock()
    store = env.store(clock=clock)
    await store.site_credentials("lumi")
    assert store._token is not None
    env.root.auth.token.revoke_accessor(store._token.accessor)
    clock.advance(45)
    assert store.metrics.total(Event.STALE_SERVED) == 0
    assert (await store.site_credentials("lumi")).get("jwt_key") == "k"
    assert store.metrics.total(Event.STALE_SERVED) == 0  # fetched anew after logging in again
    assert store.metrics.total(Event.LOGIN) == 2


@pytest.mark.anyio
async def test_dead_secret_id_is_logged_counted_and_backed_off(
    vault_env: VaultEnv, caplog: pytest.LogCaptureFixture
) -> None:
    mount, role = vault_env.options.approle_mount, vault_env.options.approle_role
    accessors = vault_env.root.list(f"auth/{mount}/role/{role}/secret-id")["data"]["keys"]
    for accessor in accessors:
        vault_env.root.write_data(
            f"auth/{mount}/role/{role}/secret-id-accessor/destroy",
            data={"secret_id_accessor": accessor},
        )
    clock = _clock()
    store = vault_env.store(clock=clock)
    with caplog.at_level(logging.WARNING, logger="gateway.secrets"):
        delays = []
        for _ in range(3):
            delays.append(await store.maintain())  # never raises
            await store.maintain()  # inside the back-off: Vault is not asked
            clock.advance(delays[-1])
    assert delays == [10, 20, 40]
    assert store.metrics.counts[(Event.LOGIN_FAILURE, Reason.SECRET_ID_INVALID)] == 3
    assert "expired, used up or revoked" in caplog.text
    status = await store.status()
    assert (status.ok, status.reason) == (False, Reason.SECRET_ID_INVALID)


@pytest.mark.anyio
async def test_a_policy_that_no_longer_allows_the_path(vault_env: VaultEnv, caplog: pytest.LogCaptureFixture) -> None:
    vault_env.put_site("lumi", {"jwt_key": "k"})
    name = vault_env.gateway_policy
    full = vault_env.root.sys.read_policy(name=name)["data"]["rules"]
    sites_block = full[full.index('path "') : full.index("}\n") + 2]
    assert "/data/sites/*" in sites_block
    clock = _clock()
    store = vault_env.store(clock=clock, sites=["lumi"])
    await store.site_credentials("lumi")
    vault_env.root.sys.create_or_update_policy(name=name, policy=full.replace(sites_block, ""))
    try:
        clock.advance(45)
        with caplog.at_level(logging.WARNING, logger="gateway.secrets"):
            assert (await store.site_credentials("lumi")).get("jwt_key") == "k"
        assert "permission denied" in caplog.text
        assert store.metrics.total(Event.PERMISSION_DENIED) == 1
        status = await store.status()
        assert (status.ok, status.reason) == (False, Reason.PERMISSION_DENIED)
        assert f"{vault_env.vault.kv_mount}/data/sites/lumi" in status.detail
        clock.advance(20)
        with pytest.raises(SecretsUnavailable) as info:
            await store.site_credentials("lumi")
        assert info.value.extra["reason"] == "permission_denied"
    finally:
        vault_env.root.sys.create_or_update_policy(name=name, policy=full)
    assert (await store.site_credentials("lumi")).get("jwt_key") == "k"
    await store.check()
    assert store.metrics.total(Event.LOGIN) == 1  # a policy problem is not a reason to log in again


@pytest.mark.anyio
async def test_upkeep_backs_off_while_sealed_and_logs_in_after_unseal(own_openbao: OwnOpenBao, tmp_path: Path) -> None:
    env = make_env(own_openbao.server, tmp_path)
    clock = _clock()
    store = env.store(clock=clock)
    own_openbao.seal()
    try:
        delays = []
        for _ in range(3):
            delays.append(await store.maintain())
            clock.advance(delays[-1])
        assert delays == [10, 20, 40]
        assert store.metrics.counts[(Event.LOGIN_FAILURE, Reason.SEALED)] == 3
    finally:
        own_openbao.unseal()
    assert await store.maintain() == 300
    await store.check()

"""Site credentials from KV v2 through the Vault store: the layout, the cache, rotation without restart."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.clock import FakeClock
from gateway.errors import ConfigurationError, SecretsUnavailable
from gateway.secrets.metrics import Event
from tests.vault.support import VaultEnv


@pytest.mark.anyio
async def test_reads_the_documented_layout_after_an_approle_login(vault_env: VaultEnv) -> None:
    version = vault_env.put_site("lumi", {"jwt_key": "a2V5LW9uZQ=="})
    store = vault_env.store()
    creds = await store.site_credentials("lumi")
    assert (creds.site, creds.version, creds.get("jwt_key")) == ("lumi", version, "a2V5LW9uZQ==")
    assert "a2V5LW9uZQ==" not in repr(creds)
    assert store.metrics.total(Event.LOGIN) == 1


@pytest.mark.anyio
async def test_served_from_cache_until_the_refresh_point(vault_env: VaultEnv) -> None:
    clock = FakeClock()
    vault_env.put_site("lumi", {"jwt_key": "one"})
    store = vault_env.store(clock=clock)
    first = await store.site_credentials("lumi")
    assert first.expires_at == clock.now() + timedelta(seconds=60)
    vault_env.put_site("lumi", {"jwt_key": "two"})
    clock.advance(30)  # ttl 60 s, refreshed after 2/3 of it
    assert (await store.site_credentials("lumi")).get("jwt_key") == "one"
    assert store.metrics.total(Event.CACHE_HIT) == 1
    assert store.metrics.total(Event.CACHE_MISS) == 1


@pytest.mark.anyio
async def test_rotation_is_picked_up_without_restart_and_nothing_fails_in_between(
    vault_env: VaultEnv,
) -> None:
    clock = FakeClock()
    vault_env.put_site("lumi", {"jwt_key": "old"})
    store = vault_env.store(clock=clock)
    seen = []
    for _ in range(3):
        seen.append((await store.site_credentials("lumi")).get("jwt_key"))
        clock.advance(10)
    vault_env.put_site("lumi", {"jwt_key": "new"})  # the operator rotates
    for _ in range(4):
        seen.append((await store.site_credentials("lumi")).get("jwt_key"))
        clock.advance(10)
    # Reads at 0..60 s: the old key until the refresh point (2/3 of the 60 s TTL), then the new one,
    # and no read failed in between.
    assert seen == ["old", "old", "old", "old", "new", "new", "new"]


@pytest.mark.anyio
async def test_invalidate_reads_the_new_version_on_next_use(vault_env: VaultEnv) -> None:
    old = vault_env.put_site("lumi", {"jwt_key": "old"})
    store = vault_env.store(clock=FakeClock())
    assert (await store.site_credentials("lumi")).version == old
    new = vault_env.put_site("lumi", {"jwt_key": "new"})
    store.invalidate("lumi")  # e.g. the site refused the old key
    creds = await store.site_credentials("lumi")
    assert (creds.version, creds.get("jwt_key")) == (new, "new")


@pytest.mark.anyio
async def test_a_site_with_nothing_stored_is_unavailable_with_the_reason(vault_env: VaultEnv) -> None:
    store = vault_env.store()
    with pytest.raises(SecretsUnavailable) as info:
        await store.site_credentials("nowhere")
    assert info.value.extra["reason"] == "not_found"
    assert f"{vault_env.vault.kv_mount}/sites/nowhere" in info.value.detail


@pytest.mark.anyio
async def test_a_non_string_field_is_refused_naming_the_field_not_the_value(vault_env: VaultEnv) -> None:
    vault_env.put_site("lumi", {"jwt_key": {"nested": "s3cr3t-nested"}})
    store = vault_env.store()
    with pytest.raises(SecretsUnavailable) as info:
        await store.site_credentials("lumi")
    assert info.value.extra["reason"] == "misconfigured"
    assert "'jwt_key'" in info.value.detail
    assert "s3cr3t" not in info.value.detail


@pytest.mark.anyio
async def test_configuration_references_resolve_within_the_policy(vault_env: VaultEnv) -> None:
    vault_env.root.secrets.kv.v2.create_or_update_secret(
        path="sites/jupiter/robot",
        secret={"client_secret": "robot-secret"},
        mount_point=vault_env.vault.kv_mount,
    )
    vault_env.root.secrets.kv.v2.create_or_update_secret(
        path="elsewhere/x", secret={"y": "not-for-the-gateway"}, mount_point=vault_env.vault.kv_mount
    )
    store = vault_env.store(clock=FakeClock())
    assert await store.resolve_reference("vault:sites/jupiter/robot#client_secret") == "robot-secret"
    with pytest.raises(SecretsUnavailable) as missing:
        await store.resolve_reference("vault:sites/jupiter/robot#password")
    assert missing.value.extra["reason"] == "misconfigured"
    with pytest.raises(SecretsUnavailable) as outside:
        await store.resolve_reference("vault:elsewhere/x#y")
    assert outside.value.extra["reason"] == "permission_denied"
    for bad in ("sites/jupiter#x", "vault:sites/jupiter", "vault:sites/../x#y", "vault:#x"):
        with pytest.raises(ConfigurationError):
            await store.resolve_reference(bad)

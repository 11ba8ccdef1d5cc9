"""The gateway's own identity at Vault: AppRole with a response-wrapped secret-id checked before unwrapping,
token renewal, a plain token for development, TLS with the configured CA."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import hvac
import hvac.exceptions
import pytest

from gateway.clock import FakeClock
from gateway.errors import SecretsUnavailable
from gateway.secrets.metrics import Event, Reason
from gateway.secrets.settings import VaultClientOptions
from gateway.secrets.vault import VaultSecretStore
from gateway.settings import VaultSettings
from tests.support.openbao import OpenBao
from tests.vault.support import VaultEnv, make_env


def _lookup_accessor(root: hvac.Client, accessor: str) -> dict[str, object]:
    data: dict[str, object] = root.auth.token.lookup_accessor(accessor)["data"]
    return data


@pytest.mark.anyio
async def test_approle_login_gets_only_the_gateway_policy(vault_env: VaultEnv) -> None:
    store = vault_env.store()
    status = await store.status()
    assert (status.ok, status.reason) == (True, Reason.NONE)
    token = store._token
    assert token is not None
    assert token.policies == (vault_env.gateway_policy,)  # no "default" policy either
    assert token.renewable
    assert store.metrics.token_expires_at is not None


@pytest.mark.anyio
async def test_a_wrapping_token_created_elsewhere_is_refused_and_left_unconsumed(
    vault_env: VaultEnv, caplog: pytest.LogCaptureFixture
) -> None:
    # Someone wraps a secret-id of their choosing: the creation path gives it away.
    forged = vault_env.root.sys.wrap(payload={"secret_id": "chosen-by-someone"}, ttl=120)
    wrapping = forged["wrap_info"]["token"]
    vault_env.secret_id_file.write_text(wrapping)
    store = vault_env.store()
    with caplog.at_level(logging.WARNING, logger="gateway.secrets"), pytest.raises(SecretsUnavailable) as info:
        await store.check()
    assert info.value.extra["reason"] == "wrapping_refused"
    assert "'sys/wrapping/wrap'" in info.value.detail
    assert "not unwrapping it" in caplog.text
    # Not unwrapped: the token is still there to be looked up.
    assert vault_env.root.adapter.post("/v1/sys/wrapping/lookup", json={"token": wrapping})["data"]
    assert store.metrics.counts[(Event.LOGIN_FAILURE, Reason.WRAPPING_REFUSED)] == 1


@pytest.mark.anyio
async def test_an_already_unwrapped_token_is_refused_as_possibly_intercepted(
    vault_env: VaultEnv, caplog: pytest.LogCaptureFixture
) -> None:
    wrapping = vault_env.deliver_secret_id()
    hvac.Client(url=vault_env.server.address, token=wrapping).sys.unwrap()  # someone got there first
    store = vault_env.store()
    with caplog.at_level(logging.WARNING, logger="gateway.secrets"), pytest.raises(SecretsUnavailable) as info:
        await store.site_credentials("lumi")
    assert info.value.extra["reason"] == "wrapping_refused"
    assert "may have been intercepted" in caplog.text


@pytest.mark.anyio
async def test_a_new_wrapped_secret_id_is_picked_up_without_restart(vault_env: VaultEnv) -> None:
    vault_env.secret_id_file.write_text("not-a-wrapping-token")
    clock = FakeClock(datetime.now(UTC))
    store = vault_env.store(clock=clock)
    with pytest.raises(SecretsUnavailable):
        await store.check()
    delay = await store.maintain()  # backing off: Vault is not asked again before the delay
    assert delay >= 5
    assert store.metrics.total(Event.LOGIN_FAILURE) == 1
    vault_env.deliver_secret_id()
    clock.advance(delay)
    await store.maintain()
    await store.check()
    assert store.metrics.total(Event.LOGIN) == 1


@pytest.mark.anyio
async def test_the_token_is_renewed_after_two_thirds_of_its_period(vault_env: VaultEnv) -> None:
    clock = FakeClock(datetime.now(UTC))
    store = vault_env.store(clock=clock)
    await store.check()
    token = store._token
    assert token is not None
    assert await store.maintain() == 300  # the upkeep step wakes at least every 5 minutes
    clock.advance(2390)  # period 3600 s: renewed after 2400 s
    await store.maintain()
    assert store.metrics.total(Event.RENEW) == 0
    assert "last_renewal_time" not in _lookup_accessor(vault_env.root, token.accessor)
    clock.advance(10)
    await store.maintain()
    assert store.metrics.total(Event.RENEW) == 1
    assert store._token is token  # renewed, not replaced
    assert "last_renewal_time" in _lookup_accessor(vault_env.root, token.accessor)


@pytest.mark.anyio
async def test_start_runs_the_upkeep_task_and_aclose_stops_it_and_revokes_the_token(
    vault_env: VaultEnv,
) -> None:
    store = vault_env.store(background=True, revoke_on_close=True)
    await store.start()
    task = store._task
    assert task is not None
    assert not task.done()
    token = store._token
    assert token is not None
    await store.aclose()
    assert task.cancelled()
    with pytest.raises(hvac.exceptions.InvalidRequest):  # Vault no longer knows the token
        vault_env.root.auth.token.lookup_accessor(token.accessor)


@pytest.mark.anyio
async def test_plain_token_for_development(openbao: OpenBao, tmp_path: Path) -> None:
    env = make_env(openbao, tmp_path)
    token = env.root.auth.token.create(policies=[env.gateway_policy], no_default_policy=True, ttl="1h")
    token_file = tmp_path / "token"
    token_file.write_text(token["auth"]["client_token"])
    settings = env.vault.model_copy(update={"auth_method": "token"})
    options = env.options.model_copy(update={"token_file": str(token_file)})
    env.put_site("lumi", {"jwt_key": "dev-key"})
    store = VaultSecretStore(settings, options=options, background=False)
    assert (await store.site_credentials("lumi")).get("jwt_key") == "dev-key"


@pytest.mark.anyio
async def test_tls_with_the_configured_ca_and_a_clear_reason_without_it(openbao_tls: OpenBao, tmp_path: Path) -> None:
    env = make_env(openbao_tls, tmp_path)
    assert env.vault.ca_cert
    store = env.store()
    await store.check()
    untrusting = VaultSecretStore(env.vault.model_copy(update={"ca_cert": ""}), options=env.options, background=False)
    with pytest.raises(SecretsUnavailable) as info:
        await untrusting.check()
    assert info.value.extra["reason"] == "tls"
    assert "vault.ca_cert" in info.value.detail


@pytest.mark.anyio
async def test_misconfiguration_is_reported_as_unavailability_naming_the_setting() -> None:
    settings = VaultSettings(enabled=True, address="http://127.0.0.1:9", role_id="")
    store = VaultSecretStore(settings, options=VaultClientOptions(), background=False)
    with pytest.raises(SecretsUnavailable) as info:
        await store.site_credentials("lumi")
    assert info.value.extra["reason"] == "misconfigured"
    assert "vault.role_id" in info.value.detail

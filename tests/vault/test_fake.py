"""The fake secret store that unit tests and `antenna dev` use: versions, SSH certificates, unavailability."""

from __future__ import annotations

import asyncssh
import pytest

from gateway.clock import FakeClock
from gateway.errors import SecretsUnavailable, SiteAuthFailed
from gateway.secrets.fake import FakeSecretStore
from gateway.secrets.metrics import Reason
from gateway.secrets.ssh import parse_certificate


def _user_public_key() -> str:
    key = asyncssh.generate_private_key("ssh-ed25519")
    text: bytes = key.export_public_key("openssh")
    return text.decode()


@pytest.mark.anyio
async def test_rotation_gives_a_new_version_with_the_new_values() -> None:
    store = FakeSecretStore()
    assert store.put_site_credentials("lumi", {"jwt_key": "k1"}) == 1
    first = await store.site_credentials("lumi")
    store.put_site_credentials("lumi", {"jwt_key": "k2"})
    second = await store.site_credentials("lumi")
    assert (first.version, first.get("jwt_key")) == (1, "k1")
    assert (second.version, second.get("jwt_key")) == (2, "k2")
    assert "k1" not in repr(first)


@pytest.mark.anyio
async def test_unknown_site_is_unavailable_with_the_reason() -> None:
    with pytest.raises(SecretsUnavailable) as info:
        await FakeSecretStore().site_credentials("nowhere")
    assert info.value.extra["reason"] == "not_found"
    assert info.value.status == 503


@pytest.mark.anyio
async def test_certificate_names_only_the_account_and_is_signed_by_the_ca() -> None:
    clock = FakeClock()
    store = FakeSecretStore(clock=clock, cert_ttl_seconds=600)
    cert_text = await store.sign_ssh_key(site="lumi", account="alice", public_key=_user_public_key())
    cert = parse_certificate(cert_text)
    assert cert.valid_principals == [b"alice"]
    assert cert.valid_before == int(clock.now().timestamp()) + 600
    assert cert.extensions == {}
    cert.verify_cert_signature()
    ca = asyncssh.import_public_key(store.ca_public_key)
    assert asyncssh.import_certificate(cert_text).signing_key == ca


@pytest.mark.anyio
async def test_accounts_outside_the_allow_list_or_malformed_are_refused() -> None:
    store = FakeSecretStore(allowed_accounts={"lumi": ["alice"]})
    key = _user_public_key()
    with pytest.raises(SiteAuthFailed):
        await store.sign_ssh_key(site="lumi", account="bob", public_key=key)
    with pytest.raises(SiteAuthFailed):
        await store.sign_ssh_key(site="lumi", account="alice,root", public_key=key)
    with pytest.raises(SiteAuthFailed):
        await store.sign_ssh_key(site="lumi", account="alice", public_key="not a key")
    store.allow_account("lumi", "bob")
    assert await store.sign_ssh_key(site="lumi", account="bob", public_key=key)
    assert store.signed == [("lumi", "bob")]


@pytest.mark.anyio
async def test_unavailable_switch_refuses_everything_until_switched_back() -> None:
    store = FakeSecretStore()
    store.put_site_credentials("lumi", {"jwt_key": "k1"})
    store.set_unavailable(Reason.SEALED)
    with pytest.raises(SecretsUnavailable, match="sealed"):
        await store.check()
    with pytest.raises(SecretsUnavailable):
        await store.site_credentials("lumi")
    with pytest.raises(SecretsUnavailable):
        await store.sign_ssh_key(site="lumi", account="alice", public_key=_user_public_key())
    store.set_available()
    await store.check()
    assert (await store.site_credentials("lumi")).version == 1


@pytest.mark.anyio
async def test_references_resolve_to_stored_secrets_and_site_credentials() -> None:
    store = FakeSecretStore()
    store.put_site_credentials("lumi", {"jwt_key": "k1"})
    store.put_secret("sites/jupiter/robot", {"client_secret": "s"})
    assert await store.resolve_reference("vault:sites/lumi#jwt_key") == "k1"
    assert await store.resolve_reference("vault:sites/jupiter/robot#client_secret") == "s"
    with pytest.raises(SecretsUnavailable):
        await store.resolve_reference("vault:sites/jupiter/robot#other")

"""No secret value reaches a log line (any logger, DEBUG included: hvac, urllib3), an exception message, a
repr or a metric label, through logins, reads, signing, rotation and failures with known secret values.

The full submission path (API, job records, OpenAPI document) is the gateway's test; this one covers
everything the secrets package itself can emit.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import asyncssh
import pytest

from gateway.clock import FakeClock
from gateway.errors import AntennaError
from tests.vault.support import VaultEnv


@pytest.mark.anyio
async def test_known_secret_values_appear_nowhere(vault_env: VaultEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    emitted: list[str] = []

    def keep(exc: BaseException) -> None:
        cursor: BaseException | None = exc
        seen: set[int] = set()
        while cursor is not None and id(cursor) not in seen:  # the whole chain: hvac's messages too
            seen.add(id(cursor))
            emitted.extend([str(cursor), repr(cursor)])
            if isinstance(cursor, AntennaError):
                emitted.extend([cursor.detail, repr(cursor.extra)])
            cursor = cursor.__cause__ or cursor.__context__

    known = {"jwt-LEAKCHECK-0001", "jwt-LEAKCHECK-0002", "client-secret-LEAKCHECK", "forged-LEAKCHECK"}
    wrapping = vault_env.deliver_secret_id()
    known.add(wrapping)
    vault_env.put_site("lumi", {"jwt_key": "jwt-LEAKCHECK-0001"})
    vault_env.put_site("jupiter", {"client_id": "antenna-jupiter", "client_secret": "client-secret-LEAKCHECK"})
    clock = FakeClock(datetime.now(UTC))
    store = vault_env.store(clock=clock, sites=["lumi", "jupiter"])

    lumi = await store.site_credentials("lumi")
    jupiter = await store.site_credentials("jupiter")
    emitted += [repr(lumi), repr(jupiter), str(lumi), repr(store)]
    assert store._auth._secret_id is not None
    assert store._token is not None
    known |= {store._auth._secret_id, store._token.value}
    key = asyncssh.generate_private_key("ssh-ed25519")
    await store.sign_ssh_key(site="lucia", account="alice", public_key=key.export_public_key().decode())
    emitted.append(repr(await store.status()))

    vault_env.put_site("lumi", {"jwt_key": "jwt-LEAKCHECK-0002"})  # rotation
    clock.advance(45)
    await store.site_credentials("lumi")

    # Failures: token revoked and no new secret-id, then past the TTL, then a forged wrapping token.
    vault_env.root.auth.token.revoke_accessor(store._token.accessor)
    clock.advance(45)
    await store.site_credentials("lumi")  # stale
    clock.advance(30)
    with pytest.raises(AntennaError) as info:
        await store.site_credentials("lumi")
    keep(info.value)
    with pytest.raises(AntennaError) as info:
        await store.check()
    keep(info.value)
    forged = vault_env.root.sys.wrap(payload={"secret_id": "forged-LEAKCHECK"}, ttl=60)
    vault_env.secret_id_file.write_text(forged["wrap_info"]["token"])
    known.add(forged["wrap_info"]["token"])
    clock.advance(600)
    with pytest.raises(AntennaError) as info:
        await store.check()
    keep(info.value)
    emitted.append(repr(await store.status()))
    emitted += list(store.metrics.snapshot())
    emitted.append(caplog.text)
    emitted += [str(record.args) for record in caplog.records]

    assert caplog.records, "expected log records to search"
    everything = "\n".join(emitted)
    leaked = sorted(value[:12] + "..." for value in known if value in everything)
    assert leaked == []

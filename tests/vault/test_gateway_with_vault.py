"""The whole gateway on the real OpenBao and the real Slurm stack: a cluster key rotated at the site and in
Vault is picked up by the next submission without a restart and without a failed job, and no secret value of
the run (cluster keys, the JWTs minted from them, the Vault token, the secret-id, the people's bearer tokens)
appears in any log line, captured output, metric, the OpenAPI document, the job records or the database.

The rotation is the operator's real procedure on the test stack's `lumi` cluster: a new key in Vault, the
same key in the controller's key file, slurmctld and slurmdbd restarted (by `stack up`, which restarts a
daemon whose configuration changed). The gateway's cache still holds the old key when the next job goes out.
"""

from __future__ import annotations

import base64
import logging
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.secrets.vault import VaultSecretStore
from tests.faults.stackgw import ALICE, StackGateway, stack_gateway, stack_sites
from tests.stack.plugin import SlurmStack
from tests.support.idp import LoopbackIdP
from tests.vault.support import VaultEnv

pytestmark = [pytest.mark.integration]

SITE = "lumi"


class SiteKey:
    """lumi's cluster key as its controller and slurmdbd read it."""

    def __init__(self, stack: SlurmStack) -> None:
        self.stack = stack
        self.path = stack.cluster(SITE).jwt_key
        self.original = self.path.read_bytes()

    def rotate(self, key: bytes) -> None:
        """The site's side of a rotation: the new key file, then `stack up` restarts the daemons reading it."""
        self.path.write_bytes(key)
        self.stack.start()


@pytest.fixture
def lumi_key(slurm_stack: SlurmStack) -> Iterator[SiteKey]:
    """Whatever the test does to lumi's key, the original key and daemons come back."""
    key = SiteKey(slurm_stack)
    try:
        yield key
    finally:
        if key.path.read_bytes() != key.original:
            key.rotate(key.original)


def _everything_emitted(gw: StackGateway, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> str:
    out, err = capfd.readouterr()
    records = [f"{r.getMessage()} {r.__dict__!r}" for r in caplog.records]
    return "\n".join([out, err, *records])


@pytest.mark.anyio
async def test_a_rotated_cluster_key_is_used_at_once_and_no_secret_leaks(
    vault_env: VaultEnv,
    slurm_stack: SlurmStack,
    test_idp: LoopbackIdP,
    lumi_key: SiteKey,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    old_key, new_key = lumi_key.original, secrets.token_bytes(32)
    old_b64, new_b64 = base64.b64encode(old_key).decode(), base64.b64encode(new_key).decode()
    vault_env.put_site(SITE, {"jwt_key": old_b64})
    wrapping = vault_env.deliver_secret_id()
    store: VaultSecretStore = vault_env.store(sites=[SITE])
    sites = {SITE: stack_sites(slurm_stack)[SITE]}
    async with stack_gateway(
        slurm_stack, test_idp, tmp_path, sites=sites, secrets=store, logging={"level": "DEBUG"}
    ) as gw:
        script = "#!/bin/bash\necho hello\n"
        first = await gw.submit(ALICE, site=SITE, partition="small", script=script)
        await gw.drive([first["id"]], {"completed"})
        assert (await store.site_credentials(SITE)).get("jwt_key") == old_b64  # cached from here on

        # The operator rotates: Vault first, then the site's key file and its daemons.
        new_version = vault_env.put_site(SITE, {"jwt_key": new_b64})
        lumi_key.rotate(new_key)

        second = await gw.submit(ALICE, site=SITE, partition="small", script=script)
        done = await gw.drive([second["id"]], {"completed"})  # any rejection fails here
        assert "rejected" not in [e["state"] for e in done[second["id"]]["history"]]
        assert (await store.site_credentials(SITE)).version == new_version
        assert gw.metric("antenna_connector_errors_total", site=SITE, kind="site-auth-failed") == 0

        minted = [token for token, _ in gw.rt.connectors[SITE]._tokens.values()]  # type: ignore[attr-defined]
        assert store._token is not None
        known = {
            "old cluster key": old_b64,
            "new cluster key": new_b64,
            "old key (hex)": old_key.hex(),
            "new key (hex)": new_key.hex(),
            "a minted site token": minted[0],
            "the Vault token": store._token.value,
            "the wrapped secret-id": wrapping,
            "a person's bearer token": gw.auth(ALICE)["Authorization"].removeprefix("Bearer "),
        }
        if store._auth._secret_id is not None:
            known["the secret-id"] = store._auth._secret_id
        documents = {
            "metrics": (await gw.client.get("/metrics")).text,
            "openapi": (await gw.client.get("/openapi.json")).text,
            "jobs": (await gw.client.get("/v1/jobs", headers=gw.auth(ALICE))).text,
            "first job": (await gw.client.get(f"/v1/jobs/{first['id']}", headers=gw.auth(ALICE))).text,
            "second job": (await gw.client.get(f"/v1/jobs/{second['id']}", headers=gw.auth(ALICE))).text,
            "readyz": (await gw.client.get("/readyz")).text,
        }
    with sqlite3.connect(tmp_path / "antenna.db") as db:
        documents["database"] = "\n".join(db.iterdump())
    documents["logs and output"] = _everything_emitted(gw, caplog, capfd)
    assert "rotated to version" in documents["logs and output"]  # the run did log about the keys, not them
    leaks = [(what, where) for what, value in known.items() for where, text in documents.items() if value in text]
    assert leaks == []

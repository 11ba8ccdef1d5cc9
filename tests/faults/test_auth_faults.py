"""Credentials the site refuses: an account missing at the site, an expired SSH certificate, a wrong cluster key.

Each goes through the whole gateway against the real stack and must end as a clear problem the person can
read on their job, an `antenna_connector_errors` sample an alert can fire on, and nothing charged.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import FakeClock
from gateway.secrets.fake import FakeSecretStore
from tests.faults.stackgw import ALICE, ZED, StackGateway, stack_gateway
from tests.stack.plugin import SlurmStack
from tests.support.idp import LoopbackIdP

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

PARTITION = {"lumi": "small", "lucia": "batch"}
UNIT = {"lumi": "cpu-core-hours", "lucia": "buh"}


async def refused(gw: StackGateway, who: str, site: str, kind: str = "site-auth-failed") -> dict[str, Any]:
    job = await gw.submit(who, site=site, partition=PARTITION[site], script="#!/bin/bash\ntrue\n")
    (done,) = (await gw.drive([job["id"]], {"rejected"}, rounds=40)).values()
    assert gw.metric("antenna_connector_errors_total", site=site, kind=kind) >= 1  # the status login may fail too
    assert done["charged"] in (None, "0", 0, "0.000000")
    balance = await gw.balance(site, UNIT[site])
    assert (balance["reserved"], balance["charged"]) == (0, 0)  # the reservation was voided
    return done


async def test_an_account_missing_at_an_ssh_site_is_a_clear_rejection_with_nothing_charged(
    slurm_stack: SlurmStack, test_idp: LoopbackIdP, tmp_path: Path
) -> None:
    async with stack_gateway(slurm_stack, test_idp, tmp_path) as gw:
        job = await refused(gw, ZED, "lucia")
        assert "the login node refused account zed" in job["reason"]


async def test_an_account_missing_at_a_slurmrestd_site_is_a_clear_rejection_with_nothing_charged(
    slurm_stack: SlurmStack, test_idp: LoopbackIdP, tmp_path: Path
) -> None:
    # slurmrestd takes the token of any name signed with the cluster key; it is Slurm that finds no
    # association for the account, and says so.
    async with stack_gateway(slurm_stack, test_idp, tmp_path) as gw:
        job = await refused(gw, ZED, "lumi", kind="site-rejected")
        assert "Invalid account" in job["reason"]
        assert (
            "the site account zed is not associated with the project's Slurm account project_465000001"
            in (job["reason"])
        )


async def test_an_expired_certificate_is_a_clear_rejection_with_nothing_charged(
    slurm_stack: SlurmStack, test_idp: LoopbackIdP, tmp_path: Path
) -> None:
    # The secrets store's clock is two hours behind: every certificate it signs has already expired.
    store = FakeSecretStore(clock=FakeClock(datetime.now(UTC) - timedelta(hours=2)))
    async with stack_gateway(slurm_stack, test_idp, tmp_path, secrets=store) as gw:
        job = await refused(gw, ALICE, "lucia")
        assert "the SSH certificate issued for account alice had already expired" in job["reason"]


async def test_a_wrong_cluster_key_is_a_clear_rejection_with_nothing_charged(
    slurm_stack: SlurmStack, test_idp: LoopbackIdP, tmp_path: Path
) -> None:
    async with stack_gateway(slurm_stack, test_idp, tmp_path) as gw:
        gw.secrets.put_site_credentials(
            "lumi", {"jwt_key": base64.b64encode(b"not the cluster key: 32 bytes!!!").decode()}
        )
        job = await refused(gw, ALICE, "lumi")
        assert "the controller refused the token for account alice" in job["reason"]

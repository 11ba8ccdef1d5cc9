"""Reconciliation through the runtime: the ledger against the site's own accounting (the local connector's
records), reported as a result, a metric and a log line; nothing in the ledger changes."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from gateway.ledger.models import ReconciliationRun
from gateway.ledger.reconcile import DifferenceKind
from tests.api.harness import ALICE, SITE, Gateway, build_app, open_gateway
from tests.support.idp import LoopbackIdP

pytestmark = pytest.mark.anyio


async def test_a_ledger_that_matches_the_site_reconciles_clean(gw: Gateway) -> None:
    job = await gw.submit(ALICE, script="#!/bin/bash\nsleep 2\n")
    done = await gw.drive_until(job["id"], {"completed"})
    assert float(done["charged"]) > 0
    now = gw.rt.clock.now()
    before = gw.counts()
    result = await gw.rt.reconcile(SITE, start=now - timedelta(days=1), end=now + timedelta(minutes=1))
    assert result.ok, result.summary()
    assert result.jobs_matched == 1
    assert gw.counts() == before  # reconciliation writes nothing
    # An operator's run over a window of their choosing is not the scheduled one: the alert's gauge keeps
    # showing the schedule's figures (none yet).
    assert "antenna_reconciliation_difference{" not in (await gw.client.get("/metrics")).text


async def test_a_charge_the_site_never_booked_is_reported(gw: Gateway) -> None:
    job = await gw.submit(ALICE, script="#!/bin/bash\nsleep 2\n")
    done = await gw.drive_until(job["id"], {"completed"})
    connector = gw.rt.connectors[SITE]
    connector._records.pop(done["site_job_id"])  # type: ignore[attr-defined]  # the site lost its record
    now = gw.rt.clock.now()
    result = await gw.rt.reconcile(SITE, start=now - timedelta(days=1), end=now + timedelta(minutes=1))
    assert not result.ok
    assert [d.kind for d in result.differences] == [DifferenceKind.MISSING_AT_SITE]
    assert result.differences[0].job_id == job["id"]


async def test_the_gateway_reconciles_by_itself_so_the_alert_can_fire(tmp_path: Path, test_idp: LoopbackIdP) -> None:
    sections = {"forwarder": {"enabled": True}, "reconciliation": {"settle_lag_minutes": 0}}
    async with open_gateway(tmp_path, test_idp, **sections) as gw:
        job = await gw.submit(ALICE, script="#!/bin/bash\nsleep 1\n")
        await gw.drive_until(job["id"], {"completed"})
        gw.rt.connectors[SITE]._records.clear()  # type: ignore[attr-defined]  # the site lost its accounting
        await gw.rt.start_background()  # what the app's start-up does: reconcile at once, then every hour
        for _ in range(200):  # bounded rounds, not a timed assertion
            scrape = (await gw.client.get("/metrics")).text
            samples = [line for line in scrape.splitlines() if line.startswith("antenna_reconciliation_difference{")]
            if samples:
                break
            await anyio.sleep(0.05)
        assert len(samples) == 1, scrape
        assert float(samples[0].rsplit(" ", 1)[1]) < 0  # the site booked less than the ledger charged


async def test_shutdown_does_not_wait_for_a_site_that_never_answers_reconciliation(
    tmp_path: Path, test_idp: LoopbackIdP, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = build_app(tmp_path, test_idp.issuer, forwarder={"enabled": True})
    runtime = app.state.runtime
    asked = asyncio.Event()

    async def never_answers(**_: object) -> list[object]:
        asked.set()
        await asyncio.Event().wait()  # a site whose accounting hangs
        return []

    monkeypatch.setattr(runtime.connectors[SITE], "usage", never_answers)
    await runtime.start_background()
    await asyncio.wait_for(asked.wait(), timeout=30)  # the run at start has begun and hangs at the site
    # Reconciliation only reads, so shutdown cuts it short (a hang guard, not a timing: without the cut this
    # never returns).
    await asyncio.wait_for(runtime.aclose(), timeout=30)
    # ... and gives the run's lease back, so that another replica takes the site at once, not after the lease.
    lease = runtime.db.run(lambda session: session.get_one(ReconciliationRun, SITE).leased_until)
    assert lease is None

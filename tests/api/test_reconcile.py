"""Reconciliation through the runtime: the ledger against the site's own accounting (the local connector's
records), reported as a result, a metric and a log line; nothing in the ledger changes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.ledger.reconcile import DifferenceKind
from tests.api.harness import ALICE, SITE, Gateway

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
    scrape = (await gw.client.get("/metrics")).text
    assert 'antenna_reconciliation_difference{project="demo"' in scrape


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

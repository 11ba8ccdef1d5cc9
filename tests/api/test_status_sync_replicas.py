"""One status sync per site and interval across replicas (issue item 8): two replicas' status syncs on one
PostgreSQL, their ticks interleaved, the clock moved by the test; the site is the ``local`` connector,
wrapped to count how often it is asked."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import FakeClock
from gateway.connectors.base import Connector, SiteJobStatus
from gateway.connectors.health import SiteHealth
from gateway.jobs.sync import StatusSync
from gateway.metrics import Metrics
from tests.api.harness import SITE, open_gateway
from tests.support.idp import LoopbackIdP

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


class Counting(Connector):
    def __init__(self, inner: Connector) -> None:
        self.inner = inner
        self.site = inner.site
        self.calls = 0

    async def statuses(self, site_job_ids: Sequence[str]) -> dict[str, SiteJobStatus]:
        self.calls += 1
        return await self.inner.statuses(site_job_ids)

    async def health(self) -> None:
        self.calls += 1
        await self.inner.health()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    submit = find = cancel = output = usage = None  # type: ignore[assignment]


async def test_item8_a_site_is_asked_once_per_its_interval_however_many_replicas_sync(
    tmp_path: Path, test_idp: LoopbackIdP, pg_url: str
) -> None:
    clock = FakeClock(datetime.now(UTC))
    site = {"status_interval_seconds": 10}
    async with open_gateway(tmp_path, test_idp, clock=clock, database_url=pg_url, site=site) as gw:
        job = await gw.submit(script="#!/bin/bash\nsleep 600\n")
        await gw.drive_until(job["id"], {"running"})
        counting = Counting(gw.rt.connectors[SITE])
        first = gw.rt.sync
        first.connectors = {SITE: counting}
        second = StatusSync(
            db=gw.rt.db,
            connectors={SITE: counting},
            health=SiteHealth(clock),
            settings=gw.rt.settings,
            clock=clock,
            metrics=Metrics(),
        )
        synced: list[tuple[float, str]] = []
        for step in range(8):  # 40 s of ticks every 5 s, each replica ticking at each step
            for name, replica in (("first", first), ("second", second)):
                if await replica.run_due(owner=name):
                    synced.append((step * 5, name))
            clock.advance(5)
        # Asked at 0, 10, 20 and 30 s: once per interval, by whichever replica found it due first.
        assert [at for at, _ in synced] == [0, 10, 20, 30]
        assert counting.calls == 4

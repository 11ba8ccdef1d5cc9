"""The reconciliation schedule across replicas: each site's accounting is asked once per interval whatever the
number of replicas, every replica exports the figures of the last run (whoever ran it), and a run that fails
is taken up again at the next tick. Two gateways share one real PostgreSQL, as replicas do; the last test
runs on the embedded SQLite too.

"An hour later" is a replica whose clock runs an interval ahead: nothing here sleeps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from gateway.errors import SiteUnavailable
from gateway.ledger.models import ReconciliationRun
from tests.api.harness import ALICE, SITE, Gateway, open_gateway
from tests.support.idp import LoopbackIdP

pytestmark = pytest.mark.anyio
SECTIONS: dict[str, Any] = {"reconciliation": {"settle_lag_minutes": 0, "interval_seconds": 3600}}


class AheadClock:
    """The system's time, plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


def count_site_queries(gw: Gateway, asked: Counter[str], name: str) -> None:
    connector = gw.rt.connectors[SITE]
    usage = connector.usage

    async def counted(**kwargs: Any) -> Any:
        asked[name] += 1
        return await usage(**kwargs)

    connector.usage = counted  # type: ignore[method-assign]


def differences(scrape: str) -> list[str]:
    return sorted(line for line in scrape.splitlines() if line.startswith("antenna_reconciliation_difference{"))


async def scrape(gw: Gateway) -> list[str]:
    return differences((await gw.client.get("/metrics")).text)


@asynccontextmanager
async def two_replicas(
    tmp_path: Path, idp: LoopbackIdP, database_url: str
) -> AsyncIterator[tuple[Gateway, Gateway, AheadClock, Counter[str]]]:
    """Replica ``a`` has charged a job that its site then lost from its accounting (so a run finds a
    difference); replica ``b`` shares the database, with a clock the test can move."""
    clock = AheadClock()
    asked: Counter[str] = Counter()
    async with (
        open_gateway(tmp_path / "a", idp, database_url=database_url, **SECTIONS) as a,
        open_gateway(tmp_path / "b", idp, database_url=database_url, seed=False, clock=clock, **SECTIONS) as b,
    ):
        job = await a.submit(ALICE, script="#!/bin/bash\nsleep 1\n")
        await a.drive_until(job["id"], {"completed"})
        a.rt.connectors[SITE]._records.clear()  # type: ignore[attr-defined]  # the site lost its accounting
        count_site_queries(a, asked, "a")
        count_site_queries(b, asked, "b")
        yield a, b, clock, asked


@pytest.mark.postgres
async def test_one_replica_asks_the_site_each_interval_and_every_replica_shows_its_figures(
    tmp_path: Path, test_idp: LoopbackIdP, pg_url: str
) -> None:
    async with two_replicas(tmp_path, test_idp, pg_url) as (a, b, clock, asked):
        assert SITE in await a.rt.reconcile_due()
        shown = await scrape(a)
        assert len(shown) == 1, shown
        assert float(shown[0].rsplit(" ", 1)[1]) < 0, shown  # the site booked less than the ledger charged

        assert await b.rt.reconcile_due() == {}  # a ran it less than an interval ago
        assert asked == {"a": 1}
        assert await scrape(b) == shown  # b shows a's figure without asking the site

        clock.offset = timedelta(hours=1, minutes=1)  # b's next tick, an interval later
        assert SITE in await b.rt.reconcile_due()
        assert await a.rt.reconcile_due() == {}  # b's run is recent for a too
        assert asked == {"a": 1, "b": 1}
        assert await scrape(a) == await scrape(b)


@pytest.mark.postgres
async def test_a_series_no_run_reports_any_more_leaves_every_replica(
    tmp_path: Path, test_idp: LoopbackIdP, pg_url: str
) -> None:
    async with two_replicas(tmp_path, test_idp, pg_url) as (a, b, _clock, _asked):
        await a.rt.reconcile_due()
        await b.rt.reconcile_due()
        assert len(await scrape(a)) == 1
        assert await scrape(b) == await scrape(a)

        def later_run_found_nothing(session: Any) -> None:  # e.g. the charge left the window
            session.execute(update(ReconciliationRun).where(ReconciliationRun.site == SITE).values(totals=[]))

        a.rt.db.run(later_run_found_nothing)
        await a.rt.reconcile_due()
        await b.rt.reconcile_due()
        assert await scrape(a) == []  # neither keeps alerting on the old figure
        assert await scrape(b) == []


async def test_a_run_the_site_cannot_answer_is_taken_up_at_the_next_tick(gw: Gateway) -> None:
    connector = gw.rt.connectors[SITE]
    usage, attempts = connector.usage, []

    async def down_once(**kwargs: Any) -> Any:
        attempts.append(kwargs)
        if len(attempts) == 1:
            raise SiteUnavailable("local: accounting down")
        return await usage(**kwargs)

    connector.usage = down_once  # type: ignore[method-assign]
    assert await gw.rt.reconcile_due() == {}  # failed: its lease is given back, nothing recorded
    assert SITE in await gw.rt.reconcile_due()  # the next tick runs it, without waiting an interval
    assert len(attempts) == 2

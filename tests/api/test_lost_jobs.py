"""Jobs the site forgets, states that are not final, and an operator resolving a lost job: with the ``local``
connector, on SQLite and PostgreSQL, the clock moved by the test.

The local site "forgets" a job the way a site loses one: it is gone from the queue and from accounting (its
record removed, its process killed). A state the code does not know comes from a wrapper that reports it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from gateway.clock import FakeClock
from gateway.connectors.base import Connector, SiteJobStatus, SiteState
from gateway.connectors.local import LocalConnector
from gateway.devmode import dev_site
from gateway.errors import ConfigurationError, SiteAuthFailed
from gateway.jobs.invariants import check_jobs
from gateway.jobs.models import OutboxEntry
from gateway.ledger.models import LedgerEntry
from gateway.ledger.service import check_invariants
from gateway.settings import load_settings
from tests.api.harness import ALICE, OPERATOR, SITE, Gateway, open_gateway
from tests.support.idp import LoopbackIdP

pytestmark = pytest.mark.anyio
SLEEP = "#!/bin/bash\nsleep 600\n"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_url")
    return url


def sound(gw: Gateway) -> list[str]:
    return gw.rt.db.run(lambda s: check_invariants(s) + check_jobs(s))


async def forget(connector: Connector, site_job_id: str) -> None:
    """The site loses the job: no longer in its queue nor its accounting."""
    assert isinstance(connector, LocalConnector)
    process = connector._processes.pop(site_job_id)
    process.kill()
    await process.wait()
    del connector._records[site_job_id]


async def test_item5_a_job_the_site_forgets_is_lost_after_its_time_limit_and_grace_then_resolved_by_an_operator(
    tmp_path: Path, test_idp: LoopbackIdP, database_url: str | None
) -> None:
    clock = FakeClock(datetime.now(UTC))  # moved by seconds: the people's tokens stay valid
    site = {"forgotten_grace_minutes": 0.5}
    async with open_gateway(tmp_path, test_idp, clock=clock, database_url=database_url, site=site) as gw:
        job = await gw.submit(script=SLEEP, time_limit="00:01:00")
        running = await gw.drive_until(job["id"], {"running"})
        await forget(gw.rt.connectors[SITE], running["site_job_id"])

        clock.advance(80)  # missing, but within its time limit and grace: it may be between queue and accounting
        await gw.rt.sync.run_once()
        assert (await gw.job(job["id"]))["state"] == "running"
        clock.advance(11)  # past the time limit and the grace
        await gw.rt.sync.run_once()
        lost = await gw.job(job["id"])
        assert lost["state"] == "lost"
        assert lost["charged"] is None
        assert Decimal((await gw.balance())["reserved"]) == Decimal(job["reserved"])
        scrape = (await gw.client.get("/metrics")).text
        assert 'antenna_jobs{partition="small",site="local",state="lost"} 1.0' in scrape
        assert sound(gw) == []

        path = f"/v1/jobs/{job['id']}/resolve"
        before = await gw.ledger_state()
        refused = [
            (ALICE, {"void": True, "reason": "not mine to say"}, 403, None),
            (OPERATOR, {"void": True, "charge": "1", "reason": "both"}, 422, "void"),
            (OPERATOR, {"reason": "neither"}, 422, "void"),
            (OPERATOR, {"void": True, "reason": ""}, 422, "reason"),
            (OPERATOR, {"charge": "-1", "reason": "negative"}, 422, "charge"),
        ]
        for who, body, status, field in refused:
            r = await gw.client.post(path, json=body, headers=gw.auth(who))
            assert r.status_code == status, (body, r.text)
            if field is not None:
                assert field in r.text, r.text
        assert await gw.ledger_state() == before  # refused: nothing changed
        assert (await gw.job(job["id"]))["state"] == "lost"

        reason = "sacct at the site shows 7 minutes on one core"
        r = await gw.client.post(path, json={"charge": "0.116667", "reason": reason}, headers=gw.auth(OPERATOR))
        assert r.status_code == 200, r.text
        resolved = r.json()
        assert resolved["state"] == "resolved"
        assert resolved["charged"] == "0.116667"
        assert Decimal((await gw.balance())["reserved"]) == 0

        def journal(session: Any) -> list[tuple[str, str]]:
            rows = session.execute(select(LedgerEntry.actor, LedgerEntry.reason).where(LedgerEntry.job_id == job["id"]))
            return [(actor, why) for actor, why in rows if reason in why]

        entries = gw.rt.db.run(journal)
        assert entries
        assert {actor for actor, _ in entries} == {OPERATOR}
        again = await gw.client.post(path, json={"void": True, "reason": "twice"}, headers=gw.auth(OPERATOR))
        assert again.status_code == 409
        assert sound(gw) == []


class _Unknown(Connector):
    """The local site, reporting a state this code does not know for every job while ``unknown`` is set."""

    def __init__(self, inner: Connector) -> None:
        self.inner = inner
        self.site = inner.site
        self.unknown = True

    async def statuses(self, site_job_ids: Sequence[str]) -> dict[str, SiteJobStatus]:
        found = await self.inner.statuses(site_job_ids)
        if not self.unknown:
            return found
        return {k: dataclasses.replace(v, state=SiteState.UNKNOWN, reason="SOME_NEW_STATE") for k, v in found.items()}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    submit = find = cancel = output = usage = health = None  # type: ignore[assignment]


async def test_item5_a_state_the_code_does_not_know_never_ends_nor_charges_a_job(
    tmp_path: Path, test_idp: LoopbackIdP
) -> None:
    async with open_gateway(tmp_path, test_idp) as gw:
        job = await gw.submit(script="#!/bin/bash\nsleep 1\n")
        await gw.drive_until(job["id"], {"running"})
        wrapper = _Unknown(gw.rt.connectors[SITE])
        gw.rt.sync.connectors = {SITE: wrapper}
        for _ in range(40):  # the job ends at the site meanwhile; its state there is unknown to us
            await gw.rt.sync.run_once()
        held = await gw.job(job["id"])
        assert held["state"] == "running"
        assert held["charged"] is None
        wrapper.unknown = False
        done = await gw.drive_until(job["id"], {"completed"})
        assert done["charged"] is not None
        assert sound(gw) == []


def test_item5_a_site_without_accounting_is_refused_outside_development(tmp_path: Path) -> None:
    options = {"host": "lumi.example", "host_keys": ["ssh-ed25519 AAAA"], "accounting": False}
    sites = {"lumi": {**dev_site(), "connector": "ssh", "options": options}}
    settings = load_settings(None, database={"url": f"sqlite:///{tmp_path / 'a.db'}"}, sites=sites)
    with pytest.raises(ConfigurationError, match=r"sites\.lumi\.options\.accounting"):
        settings.check_production()


async def test_item3_a_refused_lookup_never_voids_a_job_the_site_may_have(
    tmp_path: Path, test_idp: LoopbackIdP, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_gateway(tmp_path, test_idp, forwarder={"max_attempts": 2}) as gw:
        job = await gw.submit()
        # As after an attempt whose answer was lost: the next one looks the job up before submitting.
        gw.rt.db.run(lambda s: s.execute(update(OutboxEntry).values(attempts=1)))

        async def refuse(**_: Any) -> str | None:
            raise SiteAuthFailed(f"{SITE}: the site refused the credentials (a rotated key)")

        monkeypatch.setattr(gw.rt.connectors[SITE], "find", refuse)
        await gw.rt.forwarder.run_once()
        held = await gw.job(job["id"])
        assert held["state"] == "lost"  # not rejected: the refusal said nothing about the job
        assert Decimal((await gw.balance())["reserved"]) == Decimal(job["reserved"])
        assert sound(gw) == []


async def test_item7_retiring_a_site_is_an_operator_s_act_resolving_its_unfinished_jobs(
    tmp_path: Path, test_idp: LoopbackIdP
) -> None:
    async with open_gateway(tmp_path, test_idp) as gw:
        job = await gw.submit()
        path = f"/v1/jobs/{job['id']}/resolve"
        body = {"void": True, "reason": "the site was retired before the job was sent"}
        refused = await gw.client.post(path, json=body, headers=gw.auth(OPERATOR))
        assert refused.status_code == 409  # while the site is configured, its jobs are the forwarder's
        retired = gw.rt.settings.sites.pop(SITE)  # as after a deploy that removed the site
        try:
            r = await gw.client.post(path, json=body, headers=gw.auth(OPERATOR))
        finally:
            gw.rt.settings.sites[SITE] = retired
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "resolved"
        assert Decimal((await gw.balance())["reserved"]) == 0
        assert sound(gw) == []

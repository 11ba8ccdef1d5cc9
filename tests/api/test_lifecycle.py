"""The whole path of a job with the ``local`` connector: submit → forwarder → a real process → status sync →
charged from the elapsed time, on SQLite and on PostgreSQL.

The forwarder and the status sync are driven cycle by cycle (``run_once``), as the app's background tasks
would. Expected charges are worked out by hand: the ``small`` partition bills one core with its default
2 GB at 1 core-hour per hour, so E seconds cost E/3600 core-hours rounded up to 0.000001; E is what the
site reports, the whole seconds between the start and end it recorded (shown as the job's
``started_at``/``ended_at``).
"""

from __future__ import annotations

import asyncio
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest

from gateway.errors import LedgerInvariantBroken, SiteAuthFailed, SiteUnavailable
from tests.api.harness import ALICE, PAT, SITE, Gateway, open_gateway, utc
from tests.support.idp import LoopbackIdP

pytestmark = pytest.mark.anyio
ORDER = ["accepted", "submitted", "pending", "running"]


def elapsed(job: dict[str, Any]) -> int:
    return round((utc(job["ended_at"]) - utc(job["started_at"])).total_seconds())


def one_core_charge(seconds: int) -> str:
    micro = math.ceil(Decimal(seconds) * 1_000_000 / 3600)
    return f"{Decimal(micro) / 1_000_000:.6f}"


def states(job: dict[str, Any]) -> list[str]:
    return [event["state"] for event in job["history"]]


def in_order(history: list[str], final: str) -> bool:
    """The history walks forward through the states (any may be missed between two syncs) to ``final``."""
    *before, last = history
    positions = [ORDER.index(s) for s in dict.fromkeys(before)]
    return last == final and positions == sorted(positions) and before[:2] == ["accepted", "submitted"]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None  # the harness's SQLite file
    url: str = request.getfixturevalue("pg_url")
    return url


async def test_a_job_runs_and_is_charged_for_what_it_used(
    tmp_path: Path, test_idp: LoopbackIdP, database_url: str | None
) -> None:
    async with open_gateway(tmp_path, test_idp, database_url=database_url) as gw:
        script = '#!/bin/bash\necho "hello from $SLURM_JOB_ID"\nsleep 1.2\necho bye >&2\n'
        job = await gw.submit(ALICE, script=script, time_limit=10)
        # The answer is built from what the submission wrote, not read back: it must be what GET shows.
        assert job == await gw.job(job["id"], ALICE)
        done = await gw.drive_until(job["id"], {"completed"})
        assert in_order(states(done), "completed"), states(done)
        assert done["exit_code"] == 0
        assert done["site_job_id"] is not None
        assert elapsed(done) >= 1
        assert done["charged"] == one_core_charge(elapsed(done))
        assert Decimal(done["charged"]) < Decimal(done["reserved"])
        assert await gw.balance() == {
            "granted": "100.000000",
            "charged": done["charged"],
            "reserved": "0.000000",
            "available": f"{Decimal(100) - Decimal(done['charged']):.6f}",
            "overrun": "0.000000",
        }
        out = await gw.client.get(f"/v1/jobs/{job['id']}/output", headers=gw.auth(ALICE))
        assert out.text == f"hello from {done['site_job_id']}\n"
        err = await gw.client.get(f"/v1/jobs/{job['id']}/output?stream=stderr", headers=gw.auth(ALICE))
        assert err.text == "bye\n"
        usage = (await gw.client.get("/v1/projects/demo/usage", headers=gw.auth(ALICE))).json()
        assert [(line["job_id"], line["amount"]) for line in usage["lines"]] == [(job["id"], done["charged"])]
        # A listing reads every job's reservation in one statement; the charge must still be each job's own.
        waiting = await gw.submit(ALICE, script=script, time_limit=10)
        listed = (await gw.client.get("/v1/jobs", headers=gw.auth(ALICE))).json()["jobs"]
        assert {j["id"]: j["charged"] for j in listed} == {job["id"]: done["charged"], waiting["id"]: None}


async def test_a_failing_job_ends_failed_and_is_charged(gw: Gateway) -> None:
    job = await gw.submit(ALICE, script="#!/bin/bash\nsleep 1.2\nexit 3\n")
    done = await gw.drive_until(job["id"], {"failed"})
    assert done["exit_code"] == 3
    assert done["charged"] == one_core_charge(elapsed(done))
    assert (await gw.balance())["charged"] == done["charged"]


async def test_a_job_over_its_time_limit_ends_timeout_and_is_charged_for_the_time_it_ran(
    tmp_path: Path, test_idp: LoopbackIdP
) -> None:
    # At this site a "minute" lasts 2 s, so the one-minute limit kills the job after 2 s of its 30.
    async with open_gateway(tmp_path, test_idp, site_options={"seconds_per_minute": 2}) as gw:
        job = await gw.submit(ALICE, script="#!/bin/bash\nsleep 30\n", time_limit=1)
        assert job["reserved"] == "0.016667"  # priced at the limit: 1/60 core-hour
        done = await gw.drive_until(job["id"], {"timeout"})
        assert in_order(states(done), "timeout"), states(done)
        assert 2 <= elapsed(done) < 30
        assert done["charged"] == one_core_charge(elapsed(done))
        balance = await gw.balance()
        assert (balance["charged"], balance["reserved"]) == (done["charged"], "0.000000")


async def test_a_running_job_cancelled_is_charged_for_what_it_ran(gw: Gateway) -> None:
    script = "#!/bin/bash\necho started\nsleep 2\necho ticking\nsleep 60\n"
    job = await gw.submit(ALICE, script=script)
    await gw.drive_until(job["id"], {"running"})
    for _ in range(400):  # until the job has run at least 2 s (bounded by rounds, not timed)
        out = await gw.client.get(f"/v1/jobs/{job['id']}/output", headers=gw.auth(ALICE))
        if "ticking" in out.text:
            break
        await anyio.sleep(0.05)
    else:
        raise AssertionError(f"the job never printed 'ticking': {out.text!r}")
    r = await gw.client.delete(f"/v1/jobs/{job['id']}", headers=gw.auth(PAT))
    assert r.status_code == 202
    assert r.json()["state"] == "running"  # asked to stop; the site decides when it has
    done = await gw.drive_until(job["id"], {"cancelled"})
    assert "cancel requested by" in " ".join(e["detail"] for e in done["history"])
    assert 2 <= elapsed(done) < 60
    assert done["charged"] == one_core_charge(elapsed(done))
    assert (await gw.balance())["charged"] == done["charged"]


async def test_a_job_cancelled_before_forwarding_never_reaches_the_site_and_is_voided(gw: Gateway) -> None:
    before = await gw.balance()
    job = await gw.submit(ALICE, script="#!/bin/bash\ntouch ran\n")
    r = await gw.client.delete(f"/v1/jobs/{job['id']}", headers=gw.auth(ALICE))
    assert r.json()["state"] == "cancelled"
    await gw.rt.forwarder.run_once()
    await gw.rt.sync.run_once()
    done = await gw.job(job["id"])
    assert (done["state"], done["site_job_id"], done["charged"]) == ("cancelled", None, "0.000000")
    assert await gw.balance() == before
    assert gw.rt.dev is not None
    assert not list(gw.rt.dev.data_dir.glob("local/local/*"))  # the local site never saw it


@pytest.mark.parametrize(
    ("raised", "status", "slug", "shown"),
    [
        (SiteAuthFailed("local: the login node refused account alice"), 502, "site-auth-failed", True),
        (SiteUnavailable("local: login node unreachable", retry_after=7), 503, "site-unavailable", True),
        (LedgerInvariantBroken("ledger row 7 disagrees"), 500, "internal-error", False),
    ],
    ids=["site-refused-our-credentials", "site-down", "our-own-fault"],
)
async def test_a_site_failure_while_reading_output_is_its_own_problem(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch, raised: Exception, status: int, slug: str, shown: bool
) -> None:
    job = await gw.submit(ALICE, script="#!/bin/bash\necho hi\n")
    await gw.drive_until(job["id"], {"completed"})

    async def fail(**_: object) -> str:
        raise raised

    monkeypatch.setattr(gw.rt.connectors[SITE], "output", fail)
    r = await gw.client.get(f"/v1/jobs/{job['id']}/output", headers=gw.auth(ALICE))
    assert (r.status_code, r.json()["type"]) == (status, "https://antenna.example/problems/" + slug)
    assert (str(raised) in r.json()["detail"]) is shown  # the gateway's own faults stay in its log


async def test_a_submission_wakes_the_forwarder_instead_of_waiting_for_its_next_poll(
    tmp_path: Path, test_idp: LoopbackIdP
) -> None:
    # The forwarder polls the outbox once an hour here: only the submit route's wake can deliver the job.
    async with open_gateway(tmp_path, test_idp, forwarder={"enabled": True, "poll_seconds": 3600}) as gw:
        stop = asyncio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(gw.rt.forwarder.run_forever, stop)
            await anyio.sleep(0.2)  # its first look at the empty outbox is over; it now waits for an hour
            job = await gw.submit(ALICE, script="#!/bin/bash\nsleep 5\n")
            for _ in range(200):  # bounded rounds, not a timed assertion
                shown = await gw.job(job["id"])
                if shown["site_job_id"] is not None:
                    break
                await anyio.sleep(0.05)
            stop.set()
        assert shown["site_job_id"] is not None, shown

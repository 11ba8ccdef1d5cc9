"""/v1/jobs over HTTP: submit, list with filters and cursor pages, show, cancel, idempotency, object-level access.

Prices are worked out by hand from the local site's ``small`` partition (LUMI-like: the larger of cores
and memory/2 GB, in core-hours): one core with its default 2 GB for 10 minutes is 1/6 core-hour, rounded
up to 0.000001.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from tests.api.harness import ALICE, BOB, OSCAR, PAT, Gateway, job_body, open_gateway
from tests.support.idp import LoopbackIdP

pytestmark = pytest.mark.anyio

TEN_MINUTES_ONE_CORE = "0.166667"
PROBLEMS = "https://antenna.example/problems/"


async def test_submit_answers_202_with_location_and_the_reserved_amount(gw: Gateway) -> None:
    r = await gw.client.post("/v1/jobs", json=job_body(), headers=gw.auth(ALICE))
    assert r.status_code == 202
    job = r.json()
    assert r.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert (job["state"], job["project"], job["site"], job["partition"]) == ("accepted", "demo", "local", "small")
    assert (job["person"], job["reserved"], job["unit"], job["charged"]) == (
        ALICE,
        TEN_MINUTES_ONE_CORE,
        "cpu-core-hours",
        None,
    )
    balance = await gw.balance()
    assert balance["reserved"] == TEN_MINUTES_ONE_CORE
    assert balance["available"] == "99.833333"
    shown = await gw.client.get(r.headers["Location"], headers=gw.auth(ALICE))
    assert shown.status_code == 200
    assert [e["state"] for e in shown.json()["history"]] == ["accepted"]
    assert "script" not in shown.json()


async def test_time_limit_in_minutes_or_days_prices_the_same(gw: Gateway) -> None:
    as_minutes = await gw.submit(time_limit=10)
    as_clock = await gw.submit(time_limit="0-00:10:00")
    assert as_minutes["reserved"] == as_clock["reserved"] == TEN_MINUTES_ONE_CORE


async def test_gpu_job_reserves_gpu_hours(gw: Gateway) -> None:
    # small-g (LUMI-like): 0.5 x max(cores/8, memory/64 GB, GPUs) per hour; 2 GPUs for one hour → 1 GPU-hour.
    job = await gw.submit(partition="small-g", gpus=2, time_limit=60)
    assert (job["reserved"], job["unit"]) == ("1.000000", "gpu-hours")
    assert (await gw.balance(unit="gpu-hours"))["reserved"] == "1.000000"


async def test_list_shows_own_jobs_to_members_and_the_projects_to_its_pi(gw: Gateway) -> None:
    mine = {(await gw.submit(ALICE))["id"] for _ in range(2)}
    bobs = (await gw.submit(BOB))["id"]
    gpu = (await gw.submit(PAT, partition="small-g", gpus=1))["id"]
    others = (await gw.submit(OSCAR, project="other"))["id"]

    async def ids(person: str, **params: str) -> set[str]:
        r = await gw.client.get("/v1/jobs", params=params, headers=gw.auth(person))
        assert r.status_code == 200, r.text
        return {j["id"] for j in r.json()["jobs"]}

    assert await ids(ALICE) == mine
    assert await ids(BOB) == {bobs}
    assert await ids(PAT) == {*mine, bobs, gpu}
    assert await ids(OSCAR) == {others}
    assert await ids(PAT, project="other") == set()  # a filter never widens what one may see
    assert await ids(PAT, project="demo", site="local") == {*mine, bobs, gpu}
    assert await ids(PAT, site="elsewhere") == set()

    r = await gw.client.delete(f"/v1/jobs/{bobs}", headers=gw.auth(BOB))
    assert r.status_code == 202
    assert await ids(PAT, state="cancelled") == {bobs}
    assert await ids(PAT, state="accepted") == {*mine, gpu}
    bad = await gw.client.get("/v1/jobs", params={"state": "sleeping"}, headers=gw.auth(PAT))
    assert bad.status_code == 422
    assert bad.json()["field"] == "state"


async def test_pages_are_disjoint_and_complete_even_when_jobs_share_a_timestamp(
    tmp_path: Path, test_idp: LoopbackIdP
) -> None:
    clock = FakeClock(datetime.now(UTC))
    test_idp.clock = clock
    async with open_gateway(tmp_path, test_idp, clock=clock) as gw:
        submitted = []
        for i in range(11):
            if i % 3 == 0:  # groups of three jobs created at the very same instant
                clock.advance(1)
            submitted.append((await gw.submit(ALICE))["id"])
        pages: list[list[str]] = []
        cursor = None
        while True:
            params = {"limit": "4", **({"cursor": cursor} if cursor else {})}
            r = await gw.client.get("/v1/jobs", params=params, headers=gw.auth(ALICE))
            assert r.status_code == 200, r.text
            pages.append([j["id"] for j in r.json()["jobs"]])
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break
            assert len(pages) < 10, "pagination does not end"
        assert [len(p) for p in pages] == [4, 4, 3]
        listed = [job_id for page in pages for job_id in page]
        assert len(set(listed)) == len(listed) == 11  # disjoint
        assert set(listed) == set(submitted)  # complete
        order = [((await gw.job(j))["created_at"], j) for j in listed]
        assert order == sorted(order, reverse=True)  # newest first; ties broken by id, the cursor's key


def _cursor(*parts: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    ["bm90LWEtY3Vyc29y", _cursor("2026-01-01T00:00:00", "x"), _cursor("yesterday", "x"), _cursor(1, 2, 3)],
    ids=["not-json", "time-without-offset", "not-a-time", "wrong-shape"],
)
async def test_a_cursor_not_given_out_by_the_api_is_refused(gw: Gateway, cursor: str) -> None:
    r = await gw.client.get("/v1/jobs", params={"cursor": cursor}, headers=gw.auth(ALICE))
    assert r.status_code == 422
    assert r.json()["field"] == "cursor"


async def test_owner_cancels_a_job_not_yet_forwarded_and_its_reservation_is_voided(gw: Gateway) -> None:
    job = await gw.submit(ALICE)
    r = await gw.client.delete(f"/v1/jobs/{job['id']}", headers=gw.auth(ALICE))
    assert r.status_code == 202
    assert r.json()["state"] == "cancelled"
    shown = await gw.job(job["id"], ALICE)
    assert [e["state"] for e in shown["history"]] == ["accepted", "cancelled"]
    assert shown["charged"] == "0.000000"
    assert await gw.balance() == {
        "granted": "100.000000",
        "charged": "0.000000",
        "reserved": "0.000000",
        "available": "100.000000",
        "overrun": "0.000000",
    }
    again = await gw.client.delete(f"/v1/jobs/{job['id']}", headers=gw.auth(ALICE))
    assert again.status_code == 409
    assert again.json()["type"] == PROBLEMS + "conflict"


async def test_pi_cancels_a_members_job(gw: Gateway) -> None:
    job = await gw.submit(ALICE)
    r = await gw.client.delete(f"/v1/jobs/{job['id']}", headers=gw.auth(PAT))
    assert r.status_code == 202
    assert r.json()["state"] == "cancelled"


@pytest.mark.parametrize("intruder", [BOB, OSCAR], ids=["member-of-the-same-project", "member-of-another-project"])
async def test_others_cannot_see_or_cancel_a_job_and_learn_nothing(gw: Gateway, intruder: str) -> None:
    job = await gw.submit(ALICE)
    missing = "00000000-0000-4000-8000-000000000000"
    for method in ("GET", "DELETE"):
        theirs = await gw.client.request(method, f"/v1/jobs/{job['id']}", headers=gw.auth(intruder))
        nothing = await gw.client.request(method, f"/v1/jobs/{missing}", headers=gw.auth(intruder))
        assert theirs.status_code == nothing.status_code == 404  # not 403: existence is not revealed
        assert theirs.json()["type"] == nothing.json()["type"] == PROBLEMS + "not-found"
        assert theirs.json()["detail"].replace(job["id"], missing) == nothing.json()["detail"]
    assert (await gw.job(job["id"], ALICE))["state"] == "accepted"


async def test_idempotent_resubmission_replays_the_first_answer(gw: Gateway) -> None:
    first = await gw.client.post("/v1/jobs", json=job_body(), headers=gw.auth(ALICE, **{"Idempotency-Key": "run-42"}))
    assert first.status_code == 202
    after_first = await gw.ledger_state()
    again = await gw.client.post("/v1/jobs", json=job_body(), headers=gw.auth(ALICE, **{"Idempotency-Key": "run-42"}))
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["reserved"] == first.json()["reserved"]
    assert await gw.ledger_state() == after_first  # no second job, no second reservation
    assert after_first["jobs"] == 1


async def test_same_key_with_another_body_is_a_conflict(gw: Gateway) -> None:
    await gw.submit(ALICE, key="run-42")
    before = await gw.ledger_state()
    r = await gw.client.post(
        "/v1/jobs", json=job_body(time_limit=20), headers=gw.auth(ALICE, **{"Idempotency-Key": "run-42"})
    )
    assert r.status_code == 409
    assert r.json()["type"] == PROBLEMS + "idempotency-conflict"
    assert await gw.ledger_state() == before


async def test_idempotency_keys_are_scoped_per_person(gw: Gateway) -> None:
    alices = await gw.submit(ALICE, key="run-42")
    bobs = await gw.submit(BOB, key="run-42")
    assert alices["id"] != bobs["id"]
    assert (alices["person"], bobs["person"]) == (ALICE, BOB)
    assert gw.counts()["jobs"] == 2
    assert (await gw.balance())["reserved"] == "0.333334"


async def test_a_member_cannot_submit_to_a_project_they_are_not_in(gw: Gateway) -> None:
    before = await gw.ledger_state()
    r = await gw.client.post("/v1/jobs", json=job_body(project="other"), headers=gw.auth(ALICE))
    assert r.status_code == 403
    assert r.json()["type"] == PROBLEMS + "forbidden"
    assert await gw.ledger_state() == before

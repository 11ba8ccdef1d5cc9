"""Projects, people and probes over HTTP: balance, usage (JSON and CSV), allocations, account mappings,
/v1/me, /v1/sites, /healthz and /readyz.

The usage tests book their charges with the ledger's own ``settle`` (what the status sync calls when a job
ends) so that each person's charge is an exact, chosen amount; tests/api/test_lifecycle.py books them
through the whole path.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import FakeClock
from gateway.ledger import service as ledger
from gateway.secrets.fake import FakeSecretStore
from tests.api.harness import ALICE, BOB, NOMAD, OPERATOR, OSCAR, PAT, QUOTA_ADMIN, Gateway, open_gateway
from tests.support.idp import LoopbackIdP

pytestmark = pytest.mark.anyio
PROBLEMS = "https://antenna.example/problems/"


async def charge(gw: Gateway, job_id: str, amount: str) -> None:
    now = gw.rt.clock.now()
    gw.rt.db.run(
        lambda s: ledger.settle(s, job_id=job_id, outcome="charge", amount=Decimal(amount), at=now, reason="test")
    )


# --- balance ------------------------------------------------------------------------------------------------


async def test_members_read_the_balance_per_site_and_unit(gw: Gateway) -> None:
    await gw.submit(ALICE)
    r = await gw.client.get("/v1/projects/demo/balance", headers=gw.auth(BOB))
    assert r.status_code == 200
    body = r.json()
    assert body["project"] == "demo"
    lines = {(b["site"], b["unit"]): b for b in body["balances"]}
    assert set(lines) == {("local", "cpu-core-hours"), ("local", "gpu-hours")}
    cpu = lines["local", "cpu-core-hours"]
    assert (cpu["granted"], cpu["reserved"], cpu["charged"], cpu["available"]) == (
        "100.000000",
        "0.166667",
        "0.000000",
        "99.833333",
    )
    assert cpu["active"] is True
    assert cpu["period_start"] < cpu["period_end"]


async def test_a_projects_balance_is_not_found_for_outsiders(gw: Gateway) -> None:
    outsider = await gw.client.get("/v1/projects/demo/balance", headers=gw.auth(OSCAR))
    nothing = await gw.client.get("/v1/projects/nosuch/balance", headers=gw.auth(OSCAR))
    assert outsider.status_code == nothing.status_code == 404
    assert outsider.json()["type"] == PROBLEMS + "not-found"


# --- usage ----------------------------------------------------------------------------------------------


async def _two_charged_jobs(gw: Gateway) -> tuple[dict[str, Any], dict[str, Any]]:
    alices = await gw.submit(ALICE)
    bobs = await gw.submit(BOB)
    await charge(gw, alices["id"], "0.05")
    await charge(gw, bobs["id"], "0.1")
    return alices, bobs


async def test_usage_shows_members_their_own_lines_and_the_pi_everyones(gw: Gateway) -> None:
    alices, bobs = await _two_charged_jobs(gw)

    async def usage(person: str) -> dict[str, Any]:
        r = await gw.client.get("/v1/projects/demo/usage", headers=gw.auth(person))
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    alice_view = await usage(ALICE)
    assert [(line["job_id"], line["person"], line["amount"]) for line in alice_view["lines"]] == [
        (alices["id"], ALICE, "0.050000")
    ]
    assert alice_view["totals"] == {"local/cpu-core-hours": "0.050000"}
    for reader in (PAT, QUOTA_ADMIN):
        everyone = await usage(reader)
        assert {(line["job_id"], line["person"]) for line in everyone["lines"]} == {
            (alices["id"], ALICE),
            (bobs["id"], BOB),
        }
        assert everyone["totals"] == {"local/cpu-core-hours": "0.150000"}
    outsider = await gw.client.get("/v1/projects/demo/usage", headers=gw.auth(OSCAR))
    assert outsider.status_code == 404


async def test_the_pi_reads_one_persons_usage_and_a_member_only_their_own(gw: Gateway) -> None:
    alices, _ = await _two_charged_jobs(gw)
    url = "/v1/projects/demo/usage"
    only_alice = (await gw.client.get(url, params={"person": ALICE}, headers=gw.auth(PAT))).json()
    assert [(line["job_id"], line["person"]) for line in only_alice["lines"]] == [(alices["id"], ALICE)]
    own = await gw.client.get(url, params={"person": ALICE}, headers=gw.auth(ALICE))
    assert [line["person"] for line in own.json()["lines"]] == [ALICE]
    other = await gw.client.get(url, params={"person": ALICE}, headers=gw.auth(BOB))
    assert (other.status_code, other.json()["type"]) == (403, PROBLEMS + "forbidden")


async def test_usage_of_one_allocation_period(gw: Gateway) -> None:
    await _two_charged_jobs(gw)
    url, headers = "/v1/projects/demo/usage", gw.auth(PAT)
    seeded = (await gw.client.get(url, params={"period_start": gw.period["start"]}, headers=headers)).json()
    assert len(seeded["lines"]) == 2
    assert {line["period_start"] for line in seeded["lines"]} == {seeded["lines"][0]["period_start"]}
    other = {"period_start": "2020-01-01"}
    assert (await gw.client.get(url, params=other, headers=headers)).json()["lines"] == []


async def test_usage_as_csv(gw: Gateway) -> None:
    alices, bobs = await _two_charged_jobs(gw)
    r = await gw.client.get("/v1/projects/demo/usage", headers=gw.auth(PAT, Accept="text/csv"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert {(row["job_id"], row["person"], row["amount"]) for row in rows} == {
        (alices["id"], ALICE, "0.050000"),
        (bobs["id"], BOB, "0.100000"),
    }
    assert {row["site"] for row in rows} == {"local"}
    mine = await gw.client.get("/v1/projects/demo/usage", headers=gw.auth(ALICE, Accept="text/csv"))
    assert [row["job_id"] for row in csv.DictReader(io.StringIO(mine.text))] == [alices["id"]]


async def test_usage_filters_by_site_and_dates(gw: Gateway) -> None:
    await _two_charged_jobs(gw)
    now = gw.rt.clock.now()
    headers = gw.auth(PAT)
    other_site = await gw.client.get("/v1/projects/demo/usage", params={"site": "elsewhere"}, headers=headers)
    assert other_site.json()["lines"] == []
    future = {"start": (now + timedelta(days=1)).isoformat()}
    assert (await gw.client.get("/v1/projects/demo/usage", params=future, headers=headers)).json()["lines"] == []
    window = {"start": (now - timedelta(hours=1)).isoformat(), "end": (now + timedelta(hours=1)).isoformat()}
    assert len((await gw.client.get("/v1/projects/demo/usage", params=window, headers=headers)).json()["lines"]) == 2


# --- allocations ----------------------------------------------------------------------------------------


def _period(gw: Gateway) -> dict[str, str]:
    if gw.period:
        return gw.period
    now = gw.rt.clock.now()
    return {"start": (now - timedelta(days=1)).isoformat(), "end": (now + timedelta(days=365)).isoformat()}


async def test_quota_admin_grants_and_changes_an_allocation(bare_gw: Gateway) -> None:
    gw = bare_gw
    body = {"amount": "250.5", "unit": "gpu-hours", "project_account": "project_465000001", **_period(gw)}
    r = await gw.client.put("/v1/projects/ai4belgium/allocations/local", json=body, headers=gw.auth(QUOTA_ADMIN))
    assert r.status_code == 200, r.text
    assert (r.json()["granted"], r.json()["available"], r.json()["unit"]) == ("250.500000", "250.500000", "gpu-hours")
    r = await gw.client.put(
        "/v1/projects/ai4belgium/allocations/local", json={**body, "amount": "300"}, headers=gw.auth(QUOTA_ADMIN)
    )
    assert r.json()["granted"] == "300.000000"
    shown = await gw.client.get("/v1/projects/ai4belgium/balance", headers=gw.auth(QUOTA_ADMIN))
    assert [b["granted"] for b in shown.json()["balances"]] == ["300.000000"]


@pytest.mark.parametrize("person", [PAT, ALICE, OPERATOR], ids=["pi", "member", "operator"])
async def test_only_quota_admins_change_allocations(gw: Gateway, person: str) -> None:
    before = await gw.ledger_state()
    body = {"amount": "1000000", "unit": "cpu-core-hours", **_period(gw)}
    r = await gw.client.put("/v1/projects/demo/allocations/local", json=body, headers=gw.auth(person))
    assert r.status_code == 403
    assert r.json()["type"] == PROBLEMS + "forbidden"
    assert await gw.ledger_state() == before


async def test_an_allocation_cannot_shrink_below_what_is_committed(gw: Gateway) -> None:
    job = await gw.submit(ALICE, time_limit=60, cores=64)  # 64 core-hours reserved out of 100
    assert job["reserved"] == "64.000000"
    before = await gw.ledger_state()
    r = await gw.client.put(
        "/v1/projects/demo/allocations/local",
        json={"amount": "50", "unit": "cpu-core-hours", **_period(gw)},
        headers=gw.auth(QUOTA_ADMIN),
    )
    assert r.status_code == 409
    assert r.json()["type"] == PROBLEMS + "conflict"
    assert r.json()["field"] == "amount"
    assert await gw.ledger_state() == before
    shrunk = await gw.client.put(
        "/v1/projects/demo/allocations/local",
        json={"amount": "64", "unit": "cpu-core-hours", **_period(gw)},
        headers=gw.auth(QUOTA_ADMIN),
    )
    assert shrunk.status_code == 200
    assert shrunk.json()["available"] == "0.000000"


async def test_an_allocation_period_written_as_dates_is_read_as_utc(bare_gw: Gateway) -> None:
    # What `antenna admin allocate --start 2026-01-01 --end 2027-01-01` sends.
    gw = bare_gw
    body = {"amount": "10", "unit": "gpu-hours", "project_account": "p1", "start": "2026-01-01", "end": "2027-01-01"}
    r = await gw.client.put("/v1/projects/ai4belgium/allocations/local", json=body, headers=gw.auth(QUOTA_ADMIN))
    assert r.status_code == 200, r.text
    assert (r.json()["period_start"], r.json()["period_end"]) == ("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z")
    naive = {**body, "start": "2026-01-01T00:00:00", "amount": "12"}
    r = await gw.client.put("/v1/projects/ai4belgium/allocations/local", json=naive, headers=gw.auth(QUOTA_ADMIN))
    assert (r.status_code, r.json()["granted"], r.json()["period_start"]) == (200, "12.000000", "2026-01-01T00:00:00Z")


async def test_usage_dates_without_an_offset_are_utc(gw: Gateway) -> None:
    await _two_charged_jobs(gw)
    now = gw.rt.clock.now().astimezone(UTC)
    headers = gw.auth(PAT)
    naive = {
        "start": (now - timedelta(hours=1)).replace(tzinfo=None).isoformat(),
        "end": (now + timedelta(days=1)).date().isoformat(),
    }
    r = await gw.client.get("/v1/projects/demo/usage", params=naive, headers=headers)
    assert r.status_code == 200, r.text
    assert len(r.json()["lines"]) == 2
    later = {"start": (now + timedelta(hours=1)).replace(tzinfo=None).isoformat()}
    assert (await gw.client.get("/v1/projects/demo/usage", params=later, headers=headers)).json()["lines"] == []


@pytest.mark.parametrize(
    ("site", "changes", "status", "field"),
    [
        ("nowhere", {}, 404, None),
        ("local", {"unit": "node-hours"}, 422, "unit"),
        ("local", {"amount": "-5"}, 422, "amount"),
        ("local", {"end": "2000-01-01T00:00:00Z"}, 422, "end"),
        ("local", {"start": "not a date"}, 422, "start"),
        ("local", {"granted": "5"}, 422, "granted"),
    ],
    ids=["unknown-site", "unit-not-billed-there", "negative", "ends-before-it-starts", "bad-date", "unknown-field"],
)
async def test_bad_allocations_are_refused_naming_the_field(
    gw: Gateway, site: str, changes: dict[str, str], status: int, field: str | None
) -> None:
    before = await gw.ledger_state()
    body = {"amount": "10", "unit": "cpu-core-hours", **_period(gw), **changes}
    r = await gw.client.put(f"/v1/projects/demo/allocations/{site}", json=body, headers=gw.auth(QUOTA_ADMIN))
    assert r.status_code == status, r.text
    assert r.json().get("field") == field
    assert await gw.ledger_state() == before


# --- people and their site accounts ---------------------------------------------------------------------


async def test_operator_maps_a_person_to_a_site_account(gw: Gateway) -> None:
    r = await gw.client.put(f"/v1/people/{NOMAD}/accounts/local", json={"account": "nomad"}, headers=gw.auth(OPERATOR))
    assert r.status_code == 204
    me = await gw.client.get("/v1/me", headers=gw.auth(NOMAD))
    assert me.json()["site_accounts"] == {"local": "nomad"}
    assert (await gw.submit(NOMAD))["state"] == "accepted"  # the mapping is what let this through


@pytest.mark.parametrize("person", [QUOTA_ADMIN, PAT, NOMAD], ids=["quota-admin", "pi", "the-person-themself"])
async def test_only_operators_map_accounts(gw: Gateway, person: str) -> None:
    r = await gw.client.put(f"/v1/people/{NOMAD}/accounts/local", json={"account": "root"}, headers=gw.auth(person))
    assert r.status_code == 403
    me = await gw.client.get("/v1/me", headers=gw.auth(NOMAD))
    assert me.json()["site_accounts"] == {}


@pytest.mark.parametrize(
    ("site", "account", "status"),
    [("nowhere", "nomad", 404), ("local", "../root", 422), ("local", "Nomad; rm -rf /", 422)],
    ids=["unknown-site", "path-like-account", "shell-like-account"],
)
async def test_bad_account_mappings_are_refused(gw: Gateway, site: str, account: str, status: int) -> None:
    r = await gw.client.put(f"/v1/people/{NOMAD}/accounts/{site}", json={"account": account}, headers=gw.auth(OPERATOR))
    assert r.status_code == status
    assert (await gw.client.get("/v1/me", headers=gw.auth(NOMAD))).json()["site_accounts"] == {}


# --- /v1/me, /v1/sites, probes ----------------------------------------------------------------------------


async def test_me_shows_the_principal(gw: Gateway) -> None:
    r = await gw.client.get("/v1/me", headers=gw.auth(PAT))
    assert r.status_code == 200
    assert r.json() == {
        "person": PAT,
        "projects": [{"project": "demo", "role": "pi"}],
        "roles": [],
        "site_accounts": {"local": "pat"},
    }
    admin = (await gw.client.get("/v1/me", headers=gw.auth(QUOTA_ADMIN))).json()
    assert (admin["projects"], admin["roles"]) == ([], ["antenna-quota-admin"])


async def test_sites_lists_partitions_with_their_limits(bare_gw: Gateway) -> None:
    r = await bare_gw.client.get("/v1/sites", headers=bare_gw.auth(ALICE))
    assert r.status_code == 200
    (site,) = r.json()
    assert (site["name"], site["connector"], site["healthy"]) == ("local", "local", True)
    partitions = {p["name"]: p for p in site["partitions"]}
    assert set(partitions) == {"small", "small-g", "standard"}
    assert (partitions["small"]["max_time_minutes"], partitions["small"]["unit"]) == (60, "cpu-core-hours")
    assert (partitions["small-g"]["gpus_per_node"], partitions["small-g"]["unit"]) == (8, "gpu-hours")
    assert partitions["standard"]["exclusive"] is True


async def test_healthz_needs_no_token(bare_gw: Gateway) -> None:
    r = await bare_gw.client.get("/healthz")
    assert (r.status_code, r.json()["status"]) == (200, "ok")


async def test_readyz_reports_each_dependency(bare_gw: Gateway) -> None:
    gw = bare_gw
    assert not gw.rt.keys.ready()  # no lifespan here: nothing fetched the key set yet
    ready = await gw.client.get("/readyz")  # the probe itself loads it
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ready",
        "checks": {"database": "ok", "keys": "ok", "secrets": "ok", "site:local": "ok"},
    }
    secrets = gw.rt.secrets
    assert isinstance(secrets, FakeSecretStore)
    secrets.set_unavailable()
    sealed = await gw.client.get("/readyz")
    # Degraded, not unready: cached credentials still serve, and a Vault outage must not empty the pool.
    assert sealed.status_code == 200
    assert sealed.json()["checks"]["secrets"].startswith("degraded")


async def test_readyz_is_not_ready_when_the_idp_never_answered(tmp_path: Path, test_idp: LoopbackIdP) -> None:
    async with open_gateway(tmp_path, test_idp, seed=False) as gw:
        test_idp.close()
        refused = await gw.client.get("/v1/me", headers=gw.auth(ALICE))
        assert refused.status_code == 401
        r = await gw.client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"]["keys"] == "not loaded"


async def test_a_replica_started_while_the_idp_was_away_becomes_ready_on_its_own(
    tmp_path: Path, test_idp: LoopbackIdP
) -> None:
    # A load balancer sends no token to a replica that is not ready, so the probe must fetch the keys itself.
    clock = FakeClock(datetime.now(UTC))
    async with open_gateway(tmp_path, test_idp, clock=clock, seed=False) as gw:
        test_idp.available = False
        assert (await gw.client.get("/readyz")).status_code == 503
        test_idp.available = True
        assert (await gw.client.get("/readyz")).status_code == 503  # within the refetch cooldown: no new fetch
        clock.advance(gw.rt.settings.oidc.jwks_refetch_cooldown_seconds)
        r = await gw.client.get("/readyz")
        assert (r.status_code, r.json()["checks"]["keys"]) == (200, "ok")
        assert (await gw.client.get("/v1/me", headers=gw.auth(ALICE))).status_code == 200


async def test_item9_a_slow_issuer_with_valid_cached_keys_leaves_the_replica_ready_and_serving(
    tmp_path: Path, test_idp: LoopbackIdP
) -> None:
    clock = FakeClock(datetime.now(UTC))
    async with open_gateway(tmp_path, test_idp, clock=clock) as gw:  # seeding loaded the key set
        assert gw.rt.keys.ready()
        clock.advance(gw.rt.settings.oidc.jwks_cache_seconds + 1)  # due for refresh, well within its stale allowance
        test_idp.gate.clear()  # the issuer holds every answer
        try:
            probe = await gw.client.get("/readyz")
            assert test_idp.held.is_set()  # the probe's refresh reached the issuer, which has not answered
            assert probe.status_code == 200, probe.text
            assert probe.json()["checks"]["keys"].startswith("degraded")
            # An unrelated request, with a token whose key is cached, completes while the issuer still holds.
            token = gw.token(ALICE, exp=int(clock.now().timestamp()) + 300)
            me = await gw.client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200, me.text
            assert not test_idp.gate.is_set()
        finally:
            test_idp.gate.set()

"""``/metrics`` after a whole run: ``promtool check metrics`` accepts it, names follow Prometheus conventions,
the figures match what happened, and no label carries a person or a job id (unbounded, and personal).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.api.harness import ALICE, BOB, OSCAR, PAT, PEOPLE, Gateway, job_body
from tests.support.tools import ensure_promtool

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="session")
def promtool() -> Path:
    return ensure_promtool()


async def _whole_run(gw: Gateway) -> list[str]:
    """Submit and run a job to its end, cancel another, and be refused a few ways. Returns the job ids."""
    ran = await gw.submit(ALICE, script="#!/bin/bash\nsleep 1.2\n")
    await gw.drive_until(ran["id"], {"completed"})
    cancelled = await gw.submit(BOB)
    assert (await gw.client.delete(f"/v1/jobs/{cancelled['id']}", headers=gw.auth(PAT))).status_code == 202
    assert (await gw.client.get("/v1/me", headers={"Authorization": "Bearer not-a-jwt"})).status_code == 401
    assert (await gw.client.get("/v1/me")).status_code == 401
    assert (await gw.client.get(f"/v1/jobs/{ran['id']}", headers=gw.auth(OSCAR))).status_code == 404
    assert (await gw.client.post("/v1/jobs", json=job_body(gpus=1), headers=gw.auth(ALICE))).status_code == 422
    assert (await gw.client.get(f"/no/such/path/{ran['id']}")).status_code == 404
    return [ran["id"], cancelled["id"]]


async def _scrape(gw: Gateway) -> str:
    r = await gw.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


@pytest.mark.integration
async def test_promtool_accepts_the_exposition(gw: Gateway, promtool: Path) -> None:
    await _whole_run(gw)
    text = await _scrape(gw)
    result = await anyio.run_process([str(promtool), "check", "metrics"], input=text.encode(), check=False)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    assert output.strip() == ""  # not even a lint warning


async def test_names_follow_prometheus_conventions(gw: Gateway) -> None:
    await _whole_run(gw)
    families = list(text_string_to_metric_families(await _scrape(gw)))
    assert families
    for family in families:
        assert family.name.startswith("antenna_"), family.name
        if family.type == "counter":
            assert {s.name for s in family.samples} <= {f"{family.name}_total", f"{family.name}_created"}
            assert not family.name.endswith("_total")  # the parser strips it once: no `_total_total`
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), f"{family.name}: durations are in seconds"
        assert not family.name.endswith(("_milliseconds", "_ms")), family.name


async def test_no_label_names_a_person_or_a_job(gw: Gateway) -> None:
    job_ids = await _whole_run(gw)
    samples: list[Sample] = [s for f in text_string_to_metric_families(await _scrape(gw)) for s in f.samples]
    forbidden_values = {*PEOPLE, *job_ids}
    for sample in samples:
        assert not {"person", "user", "sub", "job_id", "job", "account"} & set(sample.labels), sample
        leaked = [v for v in sample.labels.values() if any(f in v for f in forbidden_values)]
        assert not leaked, f"{sample.name} carries {leaked}"


async def test_figures_match_the_run(gw: Gateway) -> None:
    await _whole_run(gw)
    families = {f.name: f for f in text_string_to_metric_families(await _scrape(gw))}

    def value(family: str, sample: str, **labels: str) -> float:
        found = [s.value for s in families[family].samples if s.name == sample and s.labels == labels]
        assert len(found) == 1, f"{sample}{labels}: {found}"
        return found[0]

    assert value("antenna_jobs", "antenna_jobs", site="local", partition="small", state="completed") == 1
    assert value("antenna_jobs", "antenna_jobs", site="local", partition="small", state="cancelled") == 1
    assert (
        value(
            "antenna_ledger_charges",
            "antenna_ledger_charges_total",
            project="demo",
            site="local",
            unit="cpu-core-hours",
        )
        == 1
    )
    assert (
        value(
            "antenna_ledger_reservations",
            "antenna_ledger_reservations_total",
            project="demo",
            site="local",
            unit="cpu-core-hours",
        )
        == 2
    )
    assert value("antenna_token_refusals", "antenna_token_refusals_total", reason="malformed") == 1
    assert value("antenna_token_refusals", "antenna_token_refusals_total", reason="missing") == 1
    assert (
        value(
            "antenna_allocation_reserved",
            "antenna_allocation_reserved",
            project="demo",
            site="local",
            unit="cpu-core-hours",
        )
        == 0
    )
    charged = await gw.balance()
    assert value(
        "antenna_allocation_charged",
        "antenna_allocation_charged_total",
        project="demo",
        site="local",
        unit="cpu-core-hours",
    ) == pytest.approx(float(charged["charged"]))
    # Requests are counted by route template, never by the raw path (which holds ids).
    routes = {s.labels["route"] for s in families["antenna_http_requests"].samples}
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/me", "unmatched"} <= routes
    assert (
        value(
            "antenna_http_requests",
            "antenna_http_requests_total",
            route="/v1/jobs/{job_id}",
            method="GET",
            status="404",
        )
        == 1
    )

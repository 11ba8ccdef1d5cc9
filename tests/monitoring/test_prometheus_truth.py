"""The dashboards show something true: the gateway under a scripted workload, scraped by a real Prometheus.

One gateway (``antenna dev`` shape: SQLite, local connectors for two sites, the development issuer) runs in a
uvicorn thread; Debian's Prometheus 2.42 scrapes it every second and evaluates the recording and alert rules.
The workload: GPU and CPU jobs that run and are charged, a refused token, a submission refused for quota, and
an outage of one site with jobs piling up behind it. Then every dashboard panel's query and every recording
rule is evaluated through Prometheus' HTTP API, and the numbers are compared with the ledger.

Cannot be shown here: Vault figures (``antenna dev`` runs without Vault) and reconciliation differences (the
gateway reconciles at start, before the test's jobs exist, and then once an hour; tests/api/test_reconcile*.py
cover the figure); their panels' queries are only checked to be valid PromQL.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from gateway.connectors.local import LocalConnector
from gateway.devmode import PI
from gateway.identity import ROLE_OPERATOR, ROLE_QUOTA_ADMIN, Role
from gateway.jobs.models import Job, OutboxEntry
from gateway.ledger import service as ledger
from tests.monitoring.conftest import PrometheusTools
from tests.monitoring.stack import RULE_FILES, Gateway, Prometheus, run_gateway, run_prometheus, wait_for

GRAFANA = Path(__file__).resolve().parents[2] / "dashboards" / "grafana"
FINAL = {"completed", "failed", "cancelled", "timeout", "rejected"}
# Grafana's $__rate_interval for a 1 s scrape interval: max($__interval + scrape, 4 × scrape).
RATE_INTERVAL = "4s"
# Panels that cannot show data in this workload, and why.
EXPECTED_EMPTY = {
    "Vault token expires in": "antenna dev runs without Vault",
    "Secrets store events": "antenna dev runs without Vault",
    "Reconciliation: site accounting minus ledger ($unit)": "the gateway's one run so far came before any job",
}
GPU_JOBS = [(1, 2), (1, 2), (2, 3)]  # (GPUs, seconds of work) on lumi's small-g
CPU_JOBS = [(4, 1), (8, 1)]  # (cores, seconds) on lumi's small


@dataclass
class Observed:
    gateway: Gateway
    prometheus: Prometheus
    start: float
    end: float
    jobs: dict[str, dict[str, Any]]  # every job the workload submitted, by id, as the API last showed it
    queued_during_outage: list[str]


def _job(
    client: httpx.Client, *, site: str, partition: str, seconds: int, project: str = "demo", **resources: int
) -> httpx.Response:
    body = {
        "project": project,
        "site": site,
        "partition": partition,
        "script": f"#!/bin/bash\nsleep {seconds}\necho done\n",
        "name": f"monitoring-{partition}",
        "time_limit": "00:10:00",
        **resources,
    }
    return client.post("/v1/jobs", json=body)


@pytest.fixture(scope="module")
def observed(prometheus_tools: PrometheusTools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    work = tmp_path_factory.mktemp("prometheus-truth")
    (work / "gateway").mkdir()
    (work / "prometheus").mkdir()
    with run_gateway(work / "gateway") as gw:
        target = gw.url.removeprefix("http://")
        with run_prometheus(prometheus_tools.prometheus, work / "prometheus", target) as prom:
            start = time.time()
            jobs, queued = _workload(gw, prom)
            yield Observed(gw, prom, start, time.time(), jobs, queued)


def _workload(gw: Gateway, prom: Prometheus) -> tuple[dict[str, dict[str, Any]], list[str]]:
    token = gw.mode.issuer.mint(
        PI.person,
        projects={"demo": Role.PI, "tiny": Role.MEMBER},
        roles=[ROLE_QUOTA_ADMIN, ROLE_OPERATOR],
        lifetime_seconds=3600,
    )
    client = httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    wait_for("Prometheus to scrape the gateway", lambda: prom.value('up{job="antenna-gateway"} == 1') == 1)

    # Probes and a look at the sites, as a load balancer and a user would.
    assert client.get("/readyz").status_code in (200, 503)
    wait_for("the key set to be fetched", lambda: client.get("/v1/sites").status_code == 200)
    # One malformed token and one request without any: two token refusals.
    assert httpx.get(f"{gw.url}/v1/jobs", headers={"Authorization": "Bearer not-a-jwt"}).status_code == 401
    assert httpx.get(f"{gw.url}/v1/jobs").status_code == 401

    # A small project whose grant does not cover a GPU job: refused for quota.
    now = datetime.now(UTC)
    grant = {
        "amount": "0.01",
        "unit": "gpu-hours",
        "start": (now - timedelta(days=1)).isoformat(),
        "end": (now + timedelta(days=30)).isoformat(),
        "reason": "monitoring test",
    }
    assert client.put("/v1/projects/tiny/allocations/lumi", json=grant).status_code == 200
    refused = _job(client, site="lumi", partition="small-g", seconds=1, project="tiny", gpus=1)
    assert refused.status_code == 403, refused.text
    assert refused.json()["type"].endswith("quota-exceeded")

    # Jobs that run and are charged at lumi.
    jobs: dict[str, dict[str, Any]] = {}
    for gpus, seconds in GPU_JOBS:
        response = _job(client, site="lumi", partition="small-g", seconds=seconds, gpus=gpus)
        assert response.status_code == 202, response.text
        jobs[response.json()["id"]] = response.json()
    for cores, seconds in CPU_JOBS:
        response = _job(client, site="lumi", partition="small", seconds=seconds, cores=cores)
        assert response.status_code == 202, response.text
        jobs[response.json()["id"]] = response.json()

    # lucia: a long job reaches the site, then the site goes down and new jobs queue behind it.
    running = _job(client, site="lucia", partition="small", seconds=120).json()
    wait_for(
        "the lucia job to reach the site",
        lambda: client.get(f"/v1/jobs/{running['id']}").json()["state"] in ("submitted", "pending", "running"),
    )
    lucia = gw.runtime.connectors["lucia"]
    assert isinstance(lucia, LocalConnector)
    lucia.available = False
    queued = []
    for _ in range(2):
        response = _job(client, site="lucia", partition="small", seconds=1)
        assert response.status_code == 202, response.text
        queued.append(response.json()["id"])

    def all_final() -> bool:
        for job_id in jobs:
            jobs[job_id] = client.get(f"/v1/jobs/{job_id}").json()
        return all(j["state"] in FINAL for j in jobs.values())

    wait_for("lumi's jobs to end", all_final)
    settled = time.time()
    wait_for("lucia to be seen down", lambda: prom.value('antenna_site_up{site="lucia"}') == 0)
    wait_for("lucia's backlog to be scraped", lambda: prom.value('antenna_forward_backlog{site="lucia"}') == 2)
    # A scrape, and a rule evaluation, after the last charge was booked.
    wait_for(
        "a scrape after the last settlement",
        lambda: (prom.value('timestamp(antenna_allocation_charged_total{project="demo"})') or 0) > settled + 1,
    )
    wait_for(
        "a rule evaluation after the last settlement",
        lambda: (prom.value("timestamp(project_site_unit:antenna_allocation_charged:max)") or 0) > settled + 1,
    )
    wait_for("the site-down alert to be pending", lambda: bool(prom.query('ALERTS{alertname="AntennaSiteDown"}')))
    client.close()
    return jobs, queued


# --- the dashboards ------------------------------------------------------------------------------------


def _boards() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(GRAFANA.glob("*.json"))]


def _variable_sets(board: dict[str, Any], prom: Prometheus) -> list[dict[str, str]]:
    """Every combination of values a user could pick: "All" for multi-value variables, each value otherwise."""
    fixed: dict[str, str] = {}
    choices: dict[str, list[str]] = {}
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"])
        assert match, variable["query"]
        values = prom.label_values(match[2], match[1])
        assert values, f"{board['title']}: the variable {variable['name']} offers no value"
        if variable.get("includeAll"):
            fixed[variable["name"]] = variable["allValue"]
        else:
            choices[variable["name"]] = values
    return [dict(fixed, **dict(zip(choices, combo, strict=True))) for combo in itertools.product(*choices.values())]


def _substitute(expr: str, values: dict[str, str]) -> str:
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    assert "$" not in expr, expr
    return expr


def _has_numbers(result: list[dict[str, Any]]) -> bool:
    points = [p[1] for series in result for p in series.get("values", [series.get("value")]) if p]
    return any(math.isfinite(float(v)) for v in points)


def test_every_dashboard_panel_shows_data(observed: Observed) -> None:
    prom = observed.prometheus
    empty: dict[str, list[str]] = {}
    evaluated = 0
    for board in _boards():
        for values in _variable_sets(board, prom):
            for panel in (p for p in board["panels"] if p["type"] != "row"):
                for target in panel["targets"]:
                    expr = _substitute(target["expr"], values)
                    if target.get("instant"):
                        result = prom.query(expr, at=observed.end)
                    else:
                        result = prom.query_range(expr, observed.start, observed.end)
                    evaluated += 1
                    if not _has_numbers(result):
                        empty.setdefault(panel["title"], []).append(f"{values}: {expr}")
    assert evaluated > 40
    unexpected = {title: exprs for title, exprs in empty.items() if title not in EXPECTED_EMPTY}
    assert not unexpected, json.dumps(unexpected, indent=2)


def test_every_recording_rule_has_data(observed: Observed) -> None:
    records = [
        rule["record"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    ]
    assert len(records) >= 10
    for record in records:
        result = observed.prometheus.query_range(record, observed.start, observed.end)
        assert _has_numbers(result), f"{record} has no data"


# --- the numbers agree with the ledger ------------------------------------------------------------------


def _ledger_charged(gw: Gateway, *, project: str, site: str, unit: str) -> Decimal:
    balances = gw.runtime.db.run(lambda s: ledger.balances(s, project=project))
    (balance,) = [b for b in balances if b.site == site and b.unit == unit]
    return balance.charged


def test_charged_gpu_hours_in_prometheus_equal_the_ledger(observed: Observed) -> None:
    prom = observed.prometheus
    ledger_gpu_hours = _ledger_charged(observed.gateway, project="demo", site="lumi", unit="gpu-hours")
    by_jobs = sum(Decimal(j["charged"]) for j in observed.jobs.values() if j["unit"] == "gpu-hours")
    assert all(j["state"] == "completed" for j in observed.jobs.values())
    assert ledger_gpu_hours > 0
    assert by_jobs == ledger_gpu_hours
    selector = '{project="demo", site="lumi", unit="gpu-hours"}'
    for expr in (
        f"antenna_allocation_charged_total{selector}",  # read from the database at scrape
        f"project_site_unit:antenna_allocation_charged:max{selector}",  # the recording rule the dashboard shows
        f"antenna_ledger_charged_amount_booked_total{selector}",  # counted in-process at each settlement
    ):
        value = prom.value(expr)
        assert value is not None, expr
        assert value == pytest.approx(float(ledger_gpu_hours), rel=1e-9, abs=1e-9), expr
    cpu = _ledger_charged(observed.gateway, project="demo", site="lumi", unit="cpu-core-hours")
    assert cpu > 0
    assert prom.value(
        'antenna_allocation_charged_total{project="demo", site="lumi", unit="cpu-core-hours"}'
    ) == pytest.approx(float(cpu), rel=1e-9)


def test_job_counts_and_backlog_agree_with_the_database(observed: Observed) -> None:
    def counts(session: Any) -> tuple[int, int]:
        completed = session.scalar(
            select(func.count()).select_from(Job).where(Job.site == "lumi", Job.state == "completed")
        )
        backlog = session.scalar(
            select(func.count())
            .select_from(OutboxEntry)
            .where(OutboxEntry.site == "lucia", OutboxEntry.done_at.is_(None))
        )
        return int(completed), int(backlog)

    completed, backlog = observed.gateway.runtime.db.run(counts)
    assert completed == len(GPU_JOBS) + len(CPU_JOBS)
    prom = observed.prometheus
    assert prom.value('sum(antenna_jobs{site="lumi", state="completed"})') == completed
    assert backlog == len(observed.queued_during_outage)
    assert prom.value('antenna_forward_backlog{site="lucia"}') == backlog


def test_the_outage_is_visible_and_alerting(observed: Observed) -> None:
    prom = observed.prometheus
    assert prom.value('antenna_site_up{site="lucia"}') == 0
    assert prom.value('antenna_site_up{site="lumi"}') == 1
    assert (prom.value('sum(antenna_connector_errors_total{site="lucia", kind="unavailable"})') or 0) > 0
    assert (prom.value('antenna_forward_oldest_age_seconds{site="lucia"}') or 0) > 0
    alerts = prom.query('ALERTS{alertname="AntennaSiteDown"}')
    assert [a["metric"]["site"] for a in alerts] == ["lucia"]


def test_refusals_are_counted_by_reason(observed: Observed) -> None:
    prom = observed.prometheus
    assert prom.value('antenna_token_refusals_total{reason="malformed"}') == 1
    assert prom.value('antenna_token_refusals_total{reason="missing"}') == 1
    assert prom.value('sum(antenna_http_requests_total{route="/v1/jobs", method="POST", status="403"})') == 1
    # The key set was fetched over HTTP: once in vain before the server listened, then successfully.
    assert (prom.value('antenna_jwks_fetches_total{outcome="ok"}') or 0) >= 1


def test_exported_labels_name_no_person_and_no_job(observed: Observed) -> None:
    text = httpx.get(f"{observed.gateway.url}/metrics").text
    values = {
        value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for value in sample.labels.values()
    }
    identifiers = {PI.person, *observed.jobs, *observed.queued_during_outage}
    assert not any(ident in value for ident in identifiers for value in values)
    assert "/v1/jobs/{job_id}" in values  # routes are exported as templates

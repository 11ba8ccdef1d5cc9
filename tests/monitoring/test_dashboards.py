"""The Grafana dashboards: the committed JSON is what dashboards/src generates, and each follows the conventions.

No Grafana server can run here: the JSON's shape is checked, and test_prometheus_truth.py runs every
panel's query against a real Prometheus.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "dashboards" / "src"
GRAFANA = ROOT / "dashboards" / "grafana"
TITLES = {
    "Antenna / Project allocations",
    "Antenna / Sites",
    "Antenna / Gateway",
    "Antenna / Operations",
}
RANGE = re.compile(r"\[([^\]]+)\]")


def load_dashboards() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(GRAFANA.glob("*.json"))]


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def test_committed_json_is_what_the_source_generates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(SRC))
    from antenna_dashboards.build import render_all

    rendered = render_all()
    committed = {path.name: path.read_text() for path in GRAFANA.glob("*.json")}
    assert committed == rendered, "dashboards/grafana is stale: run `uv run python dashboards/src/generate.py`"


def test_the_four_dashboards_with_unique_uids() -> None:
    boards = load_dashboards()
    assert {b["title"] for b in boards} == TITLES
    uids = [b["uid"] for b in boards]
    assert len(set(uids)) == len(uids)
    assert all(re.fullmatch(r"[a-z0-9-]{1,40}", uid) for uid in uids)


def test_datasource_is_a_variable_everywhere() -> None:
    for board in load_dashboards():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for panel in panels(board):
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        for variable in variables.values():
            if variable["type"] == "query":
                assert variable["datasource"]["uid"] == "${datasource}"


def test_panels_have_units_unique_ids_and_ref_ids() -> None:
    for board in load_dashboards():
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids), board["title"]
        assert len(panels(board)) >= 8, board["title"]
        for panel in panels(board):
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{board['title']}: {panel['title']} has no unit"
            assert panel["description"], panel["title"]
            refs = [t["refId"] for t in panel["targets"]]
            assert refs, panel["title"]
            assert len(set(refs)) == len(refs), panel["title"]
            assert all(refs), panel["title"]


def test_rates_use_the_rate_interval() -> None:
    """Raw metric ranges follow Grafana's $__rate_interval; the fixed windows live in recording rules."""
    seen = 0
    for board in load_dashboards():
        for panel in panels(board):
            for target in panel["targets"]:
                for window in RANGE.findall(target["expr"]):
                    seen += 1
                    assert window == "$__rate_interval", f"{panel['title']}: [{window}]"
    assert seen > 10


def test_every_query_variable_is_used() -> None:
    for board in load_dashboards():
        exprs = " ".join(t["expr"] for p in panels(board) for t in p["targets"])
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                assert f"${variable['name']}" in exprs, (board["title"], variable["name"])

"""dashboards/METRICS.md is generated from the Metrics registry, and label sets stay bounded."""

from __future__ import annotations

from pathlib import Path

from gateway import catalogue

METRICS_MD = Path(__file__).resolve().parents[2] / "dashboards" / "METRICS.md"


def test_catalogue_is_up_to_date() -> None:
    assert METRICS_MD.read_text() == catalogue.render(), (
        "dashboards/METRICS.md is stale: run `uv run python -m gateway.catalogue > dashboards/METRICS.md`"
    )


def test_no_label_names_a_person_or_a_job() -> None:
    for entry in catalogue.entries():
        assert not set(entry.labels) & catalogue.FORBIDDEN_LABELS, entry
        # Every label is one whose values come from a documented bounded set.
        assert set(entry.labels) <= set(catalogue.LABELS), entry


def test_every_metric_is_named_typed_and_explained() -> None:
    for entry in catalogue.entries():
        assert entry.name.startswith("antenna_"), entry
        assert entry.kind in {"counter", "gauge", "histogram"}, entry
        assert len(entry.meaning) > 10, entry


def test_the_issue_s_metrics_are_exported_with_their_labels() -> None:
    exported = {e.name: (e.kind, set(e.labels)) for e in catalogue.entries()}
    ledger = {"project", "site", "unit"}
    wanted = {
        "antenna_http_requests_total": ("counter", {"route", "method", "status"}),
        "antenna_http_request_duration_seconds": ("histogram", {"route", "method"}),
        "antenna_token_refusals_total": ("counter", {"reason"}),
        "antenna_jobs": ("gauge", {"site", "partition", "state"}),
        "antenna_forward_backlog": ("gauge", {"site"}),
        "antenna_forward_oldest_age_seconds": ("gauge", {"site"}),
        "antenna_site_up": ("gauge", {"site"}),
        "antenna_connector_errors_total": ("counter", {"site", "kind"}),
        # Granted and charged only grow within a period (counters); reserved and available go both ways.
        "antenna_allocation_granted": ("gauge", ledger),
        "antenna_allocation_charged_total": ("counter", ledger),
        "antenna_allocation_reserved": ("gauge", ledger),
        "antenna_allocation_available": ("gauge", ledger),
        "antenna_allocation_overrun_total": ("counter", ledger),
        "antenna_reconciliation_difference": ("gauge", ledger),
        "antenna_vault_token_expiry_timestamp_seconds": ("gauge", set()),
    }
    for name, shape in wanted.items():
        assert exported.get(name) == shape, name


def test_database_figures_are_marked_as_such() -> None:
    """Dashboards aggregate database figures with max (every replica reports them): the catalogue must say which."""
    sources = {e.name: e.source for e in catalogue.entries()}
    assert sources["antenna_allocation_charged_total"] == "database"
    assert sources["antenna_jobs"] == "database"
    assert sources["antenna_ledger_charged_amount_booked_total"] == "process"
    assert sources["antenna_http_requests_total"] == "process"

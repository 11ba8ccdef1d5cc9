"""The metrics catalogue (dashboards/METRICS.md), generated from the ``Metrics`` registry so it cannot drift.

``uv run python -m gateway.catalogue > dashboards/METRICS.md`` regenerates it; a test compares.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from prometheus_client.metrics import MetricWrapperBase

from gateway.metrics import LedgerFigures, Metrics, Snapshot

# Every label the gateway may export, with the bounded set its values come from. A label missing here,
# or one naming a person or a job, fails the catalogue test: cardinality stays bounded by configuration.
LABELS: dict[str, str] = {
    "route": "the route template (`/v1/jobs/{job_id}`), never the raw path; `unmatched` for unknown paths",
    "method": "the HTTP method",
    "status": "the HTTP status code",
    "reason": "token refusals: the verifier's fixed `REFUSAL_REASONS`, plus `missing`; Vault events: the "
    "fixed `Reason` set of the secrets store (empty for successes)",
    "outcome": "a fixed word per metric: `ok`/`error` (key set fetches, status sync: `ok`/`unavailable`), "
    "`accepted`/`replayed` (submissions), `delivered`/`rejected`/`retry`/`gave_up` (deliveries)",
    "site": "a site name from the configuration (`sites:`)",
    "partition": "a partition name of that site, from the configuration",
    "unit": "a billing unit of the site's partitions (`gpu-hours`, `cpu-core-hours`, ...)",
    "state": "a job state: accepted, submitted, pending, running, completed, failed, cancelled, timeout, rejected",
    "project": "a project holding an allocation (bounded by the allocations quota admins grant)",
    "action": "the outbox action: `submit` or `cancel`",
    "kind": "the error kind: `unavailable`, or the problem type slug of the site's refusal",
    "event": "the secrets store's fixed `Event` set (login, renew, cache_hit, unavailable, ...)",
}

# Labels that would make cardinality grow with people or jobs: never allowed.
FORBIDDEN_LABELS = frozenset(
    {"person", "user", "subject", "sub", "email", "job", "job_id", "site_job_id", "request_id", "token", "account"}
)


@dataclass(frozen=True)
class Entry:
    name: str  # as queried in PromQL (counters with ``_total``)
    kind: str
    labels: tuple[str, ...]
    source: str  # "process" (per replica) or "database" (read at scrape, the same on every replica)
    meaning: str


class _SampleVault:
    token_expires_at: float | None = 1.0

    def snapshot(self) -> dict[str, int]:
        return {"renew_failure:sealed": 1}


def _sample_snapshot() -> Snapshot:
    """One row of everything so the scrape-time collectors show their families and labels."""
    figures = LedgerFigures("p", "s", "u", granted=1, reserved=0, charged=0, overrun=0, active=True)
    return Snapshot(ledger=[figures], jobs=[("s", "p", "running", 1)], backlog=[("s", 1, 1.0)])


def _promql_name(name: str, kind: str) -> str:
    return f"{name}_total" if kind == "counter" else name


def entries() -> list[Entry]:
    """Every metric the gateway exports, sorted by name."""
    in_process = Metrics()
    in_process.watch_vault(_SampleVault())
    process_names = {family.name for family in in_process.registry.collect()}
    metrics = Metrics(snapshot=_sample_snapshot)
    metrics.watch_vault(_SampleVault())
    wrapped = {m._name: m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}
    out: list[Entry] = []
    for family in metrics.registry.collect():
        if family.name in wrapped:
            labels = tuple(wrapped[family.name]._labelnames)
        else:
            labels = tuple(dict.fromkeys(k for sample in family.samples for k in sample.labels))
        source = "process" if family.name in process_names else "database"
        out.append(Entry(_promql_name(family.name, family.type), family.type, labels, source, family.documentation))
    return sorted(out, key=lambda e: e.name)


def _label_order(label: str) -> int:
    order = list(LABELS)
    return order.index(label) if label in order else len(order)


def render() -> str:
    rows = entries()
    lines = [
        "# Metrics catalogue",
        "",
        "<!-- Generated from gateway/metrics.py by `uv run python -m gateway.catalogue > dashboards/METRICS.md`;",
        "     a test fails when this file is out of date. Do not edit by hand. -->",
        "",
        "Everything the gateway exports at `GET /metrics`. **Source** says where a figure comes from:",
        "",
        "- **process**: counted by each gateway replica since it started. Sum across replicas, and use",
        "  `rate()`/`increase()`, which handle restarts.",
        "- **database**: read from the ledger, jobs and outbox tables at scrape time, so every replica reports",
        "  the same figure and it agrees with the ledger by construction. Aggregate across replicas with `max`,",
        "  never `sum`. Ledger figures are in the site's unit for the allocation's active period.",
        "",
        "Histograms also export `_bucket`, `_sum` and `_count` series; counters also export `_created`.",
        "",
        "| metric | type | labels | source | meaning |",
        "|---|---|---|---|---|",
    ]
    for e in rows:
        labels = ", ".join(f"`{label}`" for label in e.labels) or "—"
        lines.append(f"| `{e.name}` | {e.kind} | {labels} | {e.source} | {e.meaning} |")
    used = sorted({label for e in rows for label in e.labels}, key=_label_order)
    lines += [
        "",
        "## Labels",
        "",
        "Label values come from bounded sets: configuration, fixed enumerations in the code, or route",
        "templates. No person, account or job identifier is ever a label (a test asserts the label sets).",
        "",
        "| label | values |",
        "|---|---|",
    ]
    lines += [f"| `{label}` | {LABELS.get(label, '**undocumented**')} |" for label in used]
    return "\n".join(lines) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()

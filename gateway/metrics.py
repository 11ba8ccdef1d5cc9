"""Every Prometheus metric the gateway exports, on a registry built per app (nothing global).

Labels are bounded: route templates, sites, partitions, units, states, reasons and projects; never a
person or a job id. Ledger figures are read from the database at scrape time, so every replica reports
the same truth and the numbers agree with the ledger by construction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.billing import from_micro


@dataclass(frozen=True)
class LedgerFigures:
    """One allocation account's figures, in micro-units, for the scrape-time collector."""

    project: str
    site: str
    unit: str
    granted: int
    reserved: int
    charged: int
    overrun: int
    active: bool


class VaultFigures(Protocol):
    """What the Vault secrets store counts (``gateway.secrets.metrics.SecretsMetrics`` has this shape)."""

    @property
    def token_expires_at(self) -> float | None: ...

    def snapshot(self) -> dict[str, int]: ...


@dataclass(frozen=True)
class Snapshot:
    ledger: list[LedgerFigures]
    jobs: list[tuple[str, str, str, int]]  # site, partition, state, count
    backlog: list[tuple[str, int, float]]  # site, entries, age of the oldest in seconds


class Metrics:
    """The metric objects. ``snapshot`` is called at scrape time to export database-derived figures."""

    def __init__(self, snapshot: Callable[[], Snapshot] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "antenna_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "antenna_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["route", "method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.token_refusals = Counter(
            "antenna_token_refusals", "Bearer tokens refused, by reason", ["reason"], registry=r
        )
        self.jwks_fetches = Counter(
            "antenna_jwks_fetches", "Key set fetches from the identity provider, by outcome", ["outcome"], registry=r
        )
        self.submissions = Counter(
            "antenna_job_submissions", "Job submissions by site and outcome", ["site", "outcome"], registry=r
        )
        self.reservations = Counter(
            "antenna_ledger_reservations", "Reservations made", ["project", "site", "unit"], registry=r
        )
        self.reserved_amount = Counter(
            "antenna_ledger_reserved_amount",
            "Amount reserved, in the site's unit",
            ["project", "site", "unit"],
            registry=r,
        )
        self.charges = Counter("antenna_ledger_charges", "Charges booked", ["project", "site", "unit"], registry=r)
        self.charged_amount_booked = Counter(
            "antenna_ledger_charged_amount_booked",
            "Amount charged by this replica, in the site's unit",
            ["project", "site", "unit"],
            registry=r,
        )
        self.overruns = Counter(
            "antenna_ledger_overruns", "Charges that exceeded their reservation", ["site", "unit"], registry=r
        )
        self.overrun_amount = Counter(
            "antenna_ledger_overrun_amount", "Amount charged above reservations", ["site", "unit"], registry=r
        )
        self.forwarded = Counter(
            "antenna_forwarder_deliveries",
            "Outbox deliveries by site, action and outcome",
            ["site", "action", "outcome"],
            registry=r,
        )
        self.connector_errors = Counter(
            "antenna_connector_errors", "Connector errors by site and kind", ["site", "kind"], registry=r
        )
        self.site_up = Gauge(
            "antenna_site_up", "1 when the site answers, 0 when its circuit is open", ["site"], registry=r
        )
        self.sync_calls = Counter(
            "antenna_status_sync_calls", "Batched status calls to sites", ["site", "outcome"], registry=r
        )
        self.reconciliation_difference = Gauge(
            "antenna_reconciliation_difference",
            "Site accounting minus ledger charges, last scheduled reconciliation (run by one replica, shown by all)",
            ["project", "site", "unit"],
            registry=r,
        )
        self.vault_token_expiry = Gauge(
            "antenna_vault_token_expiry_timestamp_seconds", "When the gateway's Vault token expires", registry=r
        )
        if snapshot is not None:
            r.register(_DatabaseCollector(snapshot))
        self._vault_watched = False

    def watch_sites(self, is_up: Callable[[str], bool], sites: Iterable[str]) -> None:
        """Export each site's health from the circuit breaker at scrape time. Safe to call again."""
        for site in sites:
            self.site_up.labels(site).set_function(_health_of(is_up, site))

    def watch_vault(self, figures: VaultFigures) -> None:
        """Export the Vault token's expiry and the secrets store's events at scrape time (once)."""
        self.vault_token_expiry.set_function(lambda: figures.token_expires_at or 0.0)
        if not self._vault_watched:
            self._vault_watched = True
            self.registry.register(_VaultCollector(figures))


def _health_of(is_up: Callable[[str], bool], site: str) -> Callable[[], float]:
    return lambda: 1.0 if is_up(site) else 0.0


class _VaultCollector(Collector):
    def __init__(self, figures: VaultFigures) -> None:
        self._figures = figures

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        events = CounterMetricFamily(
            "antenna_vault_events",
            "Secrets store events (logins, renewals, failures) by reason",
            labels=["event", "reason"],
        )
        for key, count in sorted(self._figures.snapshot().items()):
            event, _, reason = key.partition(":")
            events.add_metric([event, reason], count)
        yield events


class _DatabaseCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        started = time.perf_counter()
        snap = self._snapshot()
        read_seconds = GaugeMetricFamily(
            "antenna_database_read_seconds",
            "How long this scrape's read of the ledger, jobs and outbox took",
            value=time.perf_counter() - started,
        )
        labels = ["project", "site", "unit"]
        granted = GaugeMetricFamily(
            "antenna_allocation_granted",
            "Granted in the active period (site unit); falls when a grant is reduced",
            labels=labels,
        )
        charged = CounterMetricFamily(
            "antenna_allocation_charged", "Charged in the active period (site unit)", labels=labels
        )
        overrun = CounterMetricFamily(
            "antenna_allocation_overrun", "Charged above reservations in the active period", labels=labels
        )
        reserved = GaugeMetricFamily("antenna_allocation_reserved", "Reserved by open jobs (site unit)", labels=labels)
        available = GaugeMetricFamily(
            "antenna_allocation_available", "Available for new jobs in the active period", labels=labels
        )
        for fig in snap.ledger:
            if not fig.active:
                continue
            key = [fig.project, fig.site, fig.unit]
            granted.add_metric(key, float(from_micro(fig.granted)))
            charged.add_metric(key, float(from_micro(fig.charged)))
            overrun.add_metric(key, float(from_micro(fig.overrun)))
            reserved.add_metric(key, float(from_micro(fig.reserved)))
            available.add_metric(key, float(from_micro(fig.granted - fig.reserved - fig.charged)))
        jobs = GaugeMetricFamily(
            "antenna_jobs", "Jobs by site, partition and state", labels=["site", "partition", "state"]
        )
        for site, partition, state, count in snap.jobs:
            jobs.add_metric([site, partition, state], count)
        backlog = GaugeMetricFamily("antenna_forward_backlog", "Outbox entries not yet delivered", labels=["site"])
        oldest = GaugeMetricFamily(
            "antenna_forward_oldest_age_seconds", "Age of the oldest undelivered outbox entry", labels=["site"]
        )
        for site, count, age in snap.backlog:
            backlog.add_metric([site], count)
            oldest.add_metric([site], age)
        yield from (granted, charged, overrun, reserved, available, jobs, backlog, oldest, read_seconds)

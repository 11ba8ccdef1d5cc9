"""The "Operations" dashboard: replicas and database, Vault, identity provider, forwarder."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from antenna_dashboards.common import (
    PER_SECOND,
    REQUESTS,
    SECONDS,
    SHORT,
    Ids,
    base,
    graph,
    label_variable,
    row,
    single,
)

J = 'job=~"$job"'
RATE = "[$__rate_interval]"


def dashboard() -> dash.Dashboard:
    ids = Ids()
    return (
        base(
            "antenna-operations",
            "Antenna / Operations",
            "What the operator on duty watches: replicas and their database, Vault, the identity provider's "
            "key set, the forwarder and the status sync.",
            time_from="now-6h",
        )
        .with_variable(label_variable("job", "Scrape job", "antenna_http_requests_total"))
        .with_row(row(ids, "Gateway replicas and database"))
        .with_panel(
            single(
                ids,
                "Replicas answering",
                "Gateway replicas whose /metrics Prometheus could read at the last scrape.",
                SHORT,
                [(f"sum(up{{{J}}})", "replicas")],
                width=6,
                steps=((None, "red"), (1, "green")),
            )
        )
        .with_panel(
            graph(
                ids,
                "Database read time per scrape",
                "The ledger, jobs and outbox figures are read at each scrape: a slow read means a slow database.",
                SECONDS,
                [(f"max by (instance) (antenna_database_read_seconds{{{J}}})", "{{instance}}")],
                width=9,
            )
        )
        .with_panel(
            graph(
                ids,
                "Readiness probe answers",
                "503 when the database, the key set or the secrets store is not usable.",
                REQUESTS,
                [(f'sum by (status) (rate(antenna_http_requests_total{{{J}, route="/readyz"}}{RATE}))', "{{status}}")],
                width=9,
            )
        )
        .with_row(row(ids, "Vault"))
        .with_panel(
            single(
                ids,
                "Vault token expires in",
                "The gateway renews its token well before expiry; under 5 minutes the alert fires.",
                SECONDS,
                [(f"min(antenna_vault_token_expiry_timestamp_seconds{{{J}}} > 0) - time()", "token")],
                width=6,
                steps=((None, "red"), (300, "orange"), (1800, "green")),
            )
        )
        .with_panel(
            graph(
                ids,
                "Secrets store events",
                "Logins, renewals, cache hits and misses, and failures with their reason (sealed, unreachable...).",
                PER_SECOND,
                [
                    (
                        f"sum by (event, reason) (rate(antenna_vault_events_total{{{J}}}{RATE}))",
                        "{{event}} {{reason}}",
                    )
                ],
                width=18,
            )
        )
        .with_row(row(ids, "Identity provider"))
        .with_panel(
            graph(
                ids,
                "Key set fetches by outcome",
                "Fetches of the identity provider's JWKS: routine refreshes and unknown signing keys.",
                SHORT,
                [(f"sum by (outcome) (increase(antenna_jwks_fetches_total{{{J}}}{RATE}))", "{{outcome}}")],
                width=24,
            )
        )
        .with_row(row(ids, "Forwarder and status sync"))
        .with_panel(
            graph(
                ids,
                "Outbox deliveries by outcome",
                "Any number of forwarders may run; each entry is delivered once.",
                PER_SECOND,
                [
                    (
                        f"sum by (action, outcome) (rate(antenna_forwarder_deliveries_total{{{J}}}{RATE}))",
                        "{{action}} {{outcome}}",
                    )
                ],
                width=8,
            )
        )
        .with_panel(
            graph(
                ids,
                "Status sync calls by outcome",
                "Batched status calls per site.",
                PER_SECOND,
                [
                    (
                        f"sum by (site, outcome) (rate(antenna_status_sync_calls_total{{{J}}}{RATE}))",
                        "{{site}}: {{outcome}}",
                    )
                ],
                width=8,
            )
        )
        .with_panel(
            graph(
                ids,
                "Charges booked (site unit per second)",
                "Settlements of finished jobs, as booked by the replicas.",
                SHORT,
                [
                    (
                        f"sum by (site, unit) (rate(antenna_ledger_charged_amount_booked_total{{{J}}}{RATE}))",
                        "{{site}} {{unit}}",
                    )
                ],
                width=8,
            )
        )
    )

"""The "Gateway" dashboard: requests, errors and latency by route (RED), refusals, backlog."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from antenna_dashboards.common import (
    PER_SECOND,
    PERCENT,
    REQUESTS,
    SECONDS,
    SHORT,
    Ids,
    base,
    graph,
    label_variable,
    row,
)

J = 'job=~"$job"'
API = f'{J}, route!="/metrics"'
RATE = "[$__rate_interval]"


def dashboard() -> dash.Dashboard:
    ids = Ids()
    return (
        base(
            "antenna-gateway",
            "Antenna / Gateway",
            "The API as its users meet it: request rate, errors and latency by route, refused tokens and "
            "submissions, and jobs not yet forwarded. Prometheus' own scrapes are left out.",
            time_from="now-6h",
        )
        .with_variable(label_variable("job", "Scrape job", "antenna_http_requests_total"))
        .with_row(row(ids, "Requests, errors, latency"))
        .with_panel(
            graph(
                ids,
                "Requests by route",
                "Route templates, never raw paths.",
                REQUESTS,
                [
                    (
                        f"sum by (method, route) (rate(antenna_http_requests_total{{{API}}}{RATE}))",
                        "{{method}} {{route}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                ids,
                "Responses by status",
                "4xx are refusals the API means (quota, validation, tokens); 5xx spend the error budget.",
                REQUESTS,
                [(f"sum by (status) (rate(antenna_http_requests_total{{{API}}}{RATE}))", "{{status}}")],
                stacked=True,
            )
        )
        .with_panel(
            graph(
                ids,
                "Server error ratio (SLO: 99.9 % of requests without 5xx)",
                "The windows the error-budget alerts read: they page when both are above 14.4 × 0.1 %.",
                PERCENT,
                [
                    (f"job:antenna_http_errors:ratio_rate5m{{{J}}}", "{{job}}: 5 minutes"),
                    (f"job:antenna_http_errors:ratio_rate1h{{{J}}}", "{{job}}: 1 hour"),
                ],
            )
        )
        .with_panel(
            graph(
                ids,
                "Latency by route (95th percentile)",
                "From the request duration histogram.",
                SECONDS,
                [
                    (
                        "histogram_quantile(0.95, sum by (le, route) "
                        f"(rate(antenna_http_request_duration_seconds_bucket{{{API}}}{RATE})))",
                        "{{route}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                ids,
                "Latency, all routes (50th and 99th percentiles)",
                "From the request duration histogram.",
                SECONDS,
                [
                    (
                        "histogram_quantile(0.5, sum by (le) "
                        f"(rate(antenna_http_request_duration_seconds_bucket{{{API}}}{RATE})))",
                        "p50",
                    ),
                    (
                        "histogram_quantile(0.99, sum by (le) "
                        f"(rate(antenna_http_request_duration_seconds_bucket{{{API}}}{RATE})))",
                        "p99",
                    ),
                ],
                width=24,
            )
        )
        .with_row(row(ids, "Refusals"))
        .with_panel(
            graph(
                ids,
                "Token refusals by reason",
                "Bearer tokens refused: expired, wrong audience or issuer, unknown key, missing...",
                PER_SECOND,
                [(f"sum by (reason) (rate(antenna_token_refusals_total{{{J}}}{RATE}))", "{{reason}}")],
            )
        )
        .with_panel(
            graph(
                ids,
                "Submissions refused",
                "403: over quota or not a member; 429: rate limited; 503: the site is down and refuses new jobs.",
                PER_SECOND,
                [
                    (
                        f'sum by (status) (rate(antenna_http_requests_total{{{J}, route="/v1/jobs", method="POST", '
                        f'status=~"403|429|503"}}{RATE}))',
                        "{{status}}",
                    )
                ],
            )
        )
        .with_row(row(ids, "Forwarding"))
        .with_panel(
            graph(
                ids,
                "Jobs accepted but not yet at their site",
                "The outbox: entries wait while a site is down, and are delivered when it answers.",
                SHORT,
                [(f"max by (site) (antenna_forward_backlog{{{J}}})", "{{site}}")],
            )
        )
        .with_panel(
            graph(
                ids,
                "Age of the oldest undelivered job",
                "Alerts: growing backlog with an entry older than 5 minutes; stalled at 30 minutes.",
                SECONDS,
                [(f"max by (site) (antenna_forward_oldest_age_seconds{{{J}}})", "{{site}}")],
            )
        )
    )

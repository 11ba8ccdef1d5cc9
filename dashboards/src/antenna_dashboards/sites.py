"""The "Sites" dashboard: health, submissions, queue and forwarding latency per site."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from antenna_dashboards.common import PER_SECOND, SECONDS, SHORT, Ids, base, graph, label_variable, row, single, up_down

S = 'site=~"$site"'
RATE = "[$__rate_interval]"
ENDED = 'state=~"completed|failed|cancelled|timeout|rejected"'


def dashboard() -> dash.Dashboard:
    ids = Ids()
    return (
        base(
            "antenna-sites",
            "Antenna / Sites",
            "Each site as the gateway sees it: reachable or not, what it accepts, what waits, how long jobs take "
            "to reach it.",
            time_from="now-6h",
        )
        .with_variable(label_variable("site", "Site", "antenna_site_up"))
        .with_row(row(ids, "Health"))
        .with_panel(
            single(
                ids,
                "Site reachable",
                "Down when every gateway replica has the site's circuit open (repeated connector failures).",
                SHORT,
                [(f"max by (site) (antenna_site_up{{{S}}})", "{{site}}")],
                width=8,
                steps=((None, "red"), (1, "green")),
                mappings=up_down(),
            )
        )
        .with_panel(
            graph(
                ids,
                "Site reachable over time (1 up, 0 down)",
                "The circuit breaker's view, per site.",
                SHORT,
                [(f"max by (site) (antenna_site_up{{{S}}})", "{{site}}")],
                width=16,
            )
        )
        .with_panel(
            graph(
                ids,
                "Connector errors by kind",
                "Failed calls to the site: `unavailable`, or the kind of refusal the site answered.",
                PER_SECOND,
                [(f"sum by (site, kind) (rate(antenna_connector_errors_total{{{S}}}{RATE}))", "{{site}}: {{kind}}")],
            )
        )
        .with_panel(
            graph(
                ids,
                "Status sync calls by outcome",
                "One batched status call per site and interval, never one per job.",
                PER_SECOND,
                [
                    (
                        f"sum by (site, outcome) (rate(antenna_status_sync_calls_total{{{S}}}{RATE}))",
                        "{{site}}: {{outcome}}",
                    )
                ],
            )
        )
        .with_row(row(ids, "Jobs"))
        .with_panel(
            graph(
                ids,
                "Submissions accepted",
                "Jobs accepted (priced and reserved) for the site, and idempotent replays.",
                PER_SECOND,
                [
                    (
                        f"sum by (site, outcome) (rate(antenna_job_submissions_total{{{S}}}{RATE}))",
                        "{{site}}: {{outcome}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                ids,
                "Jobs waiting and running",
                "Accepted (not yet forwarded), submitted and pending at the site, and running.",
                SHORT,
                [
                    (
                        f'max by (site, state) (antenna_jobs{{{S}, state=~"accepted|submitted|pending|running"}})',
                        "{{site}}: {{state}}",
                    )
                ],
                stacked=True,
            )
        )
        .with_panel(
            graph(
                ids,
                "Jobs ended, by final state",
                "Jobs in the gateway's table that ended, per final state.",
                SHORT,
                [
                    (
                        f"max by (site, state) (antenna_jobs{{{S}, {ENDED}}})",
                        "{{site}}: {{state}}",
                    )
                ],
            )
        )
        .with_row(row(ids, "Latency"))
        .with_panel(
            graph(
                ids,
                "Forwarding delay: the oldest job not yet at the site",
                "How long the oldest accepted job has waited to be delivered to the site. Empty when none waits.",
                SECONDS,
                [(f"max by (site) (antenna_forward_oldest_age_seconds{{{S}}})", "{{site}}")],
            )
        )
        .with_panel(
            graph(
                ids,
                "Deliveries to the site by outcome",
                "Submissions and cancellations delivered, refused by the site, retried later, or given up.",
                PER_SECOND,
                [
                    (
                        f"sum by (site, action, outcome) (rate(antenna_forwarder_deliveries_total{{{S}}}{RATE}))",
                        "{{site}}: {{action}} {{outcome}}",
                    )
                ],
            )
        )
    )

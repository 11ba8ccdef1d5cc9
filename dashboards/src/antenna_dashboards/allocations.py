"""The "Project allocations" dashboard: per project and site, granted vs charged vs reserved, burn, run-out."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from antenna_dashboards.common import (
    DATE,
    PER_HOUR,
    PERCENT,
    SECONDS,
    SHORT,
    Ids,
    bars,
    base,
    graph,
    label_variable,
    row,
    single,
)

F = 'project=~"$project", site=~"$site", unit="$unit"'
WHO = "{{project}} at {{site}}"


def dashboard() -> dash.Dashboard:
    ids = Ids()
    return (
        base(
            "antenna-allocations",
            "Antenna / Project allocations",
            "How fast each project burns its allocation at each site, and when it will run out. Figures come "
            "from the gateway's ledger (the same on every replica), in the site's billing unit.",
            time_from="now-7d",
        )
        .with_variable(label_variable("project", "Project", "antenna_allocation_granted"))
        .with_variable(label_variable("site", "Site", "antenna_allocation_granted"))
        .with_variable(label_variable("unit", "Unit", "antenna_allocation_granted", multi=False))
        .with_row(row(ids, "Where each project stands"))
        .with_panel(
            bars(
                ids,
                "Share of the grant charged ($unit)",
                "Charged in the active period over granted. Alerts fire at 80 %, 95 % and 100 %.",
                PERCENT,
                [(f"project_site_unit:antenna_allocation_used:ratio{{{F}}}", WHO)],
                steps=((None, "green"), (0.8, "yellow"), (0.95, "orange"), (1, "red")),
                maximum=1,
            )
        )
        .with_panel(
            bars(
                ids,
                "Share of the grant committed: charged + reserved ($unit)",
                "Reservations are held by queued and running jobs; a submission is refused when it does not fit.",
                PERCENT,
                [(f"project_site_unit:antenna_allocation_committed:ratio{{{F}}}", WHO)],
                steps=((None, "green"), (0.8, "yellow"), (0.95, "orange"), (1, "red")),
                maximum=1,
            )
        )
        .with_panel(
            single(
                ids,
                "Projected run-out",
                "When the allocation is spent if the last day's burn rate goes on. Empty while nothing burns.",
                DATE,
                [(f"project_site_unit:antenna_allocation_exhaustion:timestamp{{{F}}} * 1000", WHO)],
                width=12,
            )
        )
        .with_panel(
            single(
                ids,
                "Time left at the current burn rate",
                "Red under a week (the run-out alert), orange under a month.",
                SECONDS,
                [(f"project_site_unit:antenna_allocation_exhaustion:timestamp{{{F}}} - time()", WHO)],
                width=12,
                steps=((None, "red"), (7 * 86400, "orange"), (30 * 86400, "green")),
            )
        )
        .with_row(row(ids, "Over time"))
        .with_panel(
            graph(
                ids,
                "Granted, charged and reserved ($unit)",
                "The grant of the active period, what finished jobs cost, and what open jobs hold.",
                SHORT,
                [
                    (f"project_site_unit:antenna_allocation_granted:max{{{F}}}", f"{WHO}: granted"),
                    (f"project_site_unit:antenna_allocation_charged:max{{{F}}}", f"{WHO}: charged"),
                    (f"project_site_unit:antenna_allocation_reserved:max{{{F}}}", f"{WHO}: reserved"),
                ],
                width=24,
            )
        )
        .with_panel(
            graph(
                ids,
                "Burn rate ($unit per hour)",
                "Charges per hour, averaged over the last hour and over the last day.",
                PER_HOUR,
                [
                    (f"project_site_unit:antenna_allocation_burn_per_hour:rate1h{{{F}}}", f"{WHO}: last hour"),
                    (f"project_site_unit:antenna_allocation_burn_per_hour:rate1d{{{F}}}", f"{WHO}: last day"),
                ],
            )
        )
        .with_panel(
            graph(
                ids,
                "Available for new jobs ($unit)",
                "Granted minus charged minus reserved.",
                SHORT,
                [(f"project_site_unit:antenna_allocation_available:max{{{F}}}", WHO)],
            )
        )
        .with_panel(
            graph(
                ids,
                "Charged above reservations ($unit)",
                "Overruns: jobs that cost more than the gateway reserved for them, booked to the overrun account.",
                SHORT,
                [(f"max by (project, site, unit) (antenna_allocation_overrun_total{{{F}}})", WHO)],
            )
        )
        .with_panel(
            graph(
                ids,
                "Reconciliation: site accounting minus ledger ($unit)",
                "From the last reconciliation against the site's accounting; anything but 0 needs a look.",
                SHORT,
                [(f"max by (project, site, unit) (antenna_reconciliation_difference{{{F}}})", WHO)],
            )
        )
    )

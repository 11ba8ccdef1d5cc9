"""What every Antenna dashboard shares: the datasource variable, query and panel helpers, units, links.

Panels take their Prometheus datasource from the ``datasource`` variable, rates use ``$__rate_interval``,
and every panel states its unit. Ids and query refIds are assigned per dashboard so they are unique.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterator

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common, dashboard

DATASOURCE = dashboard.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAG = "antenna"

# Grafana unit ids.
SHORT, PERCENT, SECONDS, DATE, PER_SECOND, REQUESTS = "short", "percentunit", "s", "dateTimeAsIso", "ops", "reqps"
PER_HOUR = "short"  # allocation units per hour; the unit's name is in the title and legend


class Ids:
    """Panel ids, unique within one dashboard."""

    def __init__(self) -> None:
        self._next: Iterator[int] = itertools.count(1)

    def __call__(self) -> int:
        return next(self._next)


def query(expr: str, legend: str, ref: str = "A", *, instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)
    return q.instant() if instant else q.range()


def _targets(
    queries: list[tuple[str, str]], *, instant: bool = False
) -> list[cogbuilder.Builder[cogvariants.Dataquery]]:
    refs = string.ascii_uppercase[: len(queries)]
    return [query(expr, legend, ref, instant=instant) for (expr, legend), ref in zip(queries, refs, strict=True)]


def _legend() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(["lastNotNull", "max"])
    )


def graph(
    ids: Ids,
    title: str,
    description: str,
    unit: str,
    queries: list[tuple[str, str]],
    *,
    width: int = 12,
    stacked: bool = False,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .id(ids())
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(8)
        .legend(_legend())
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .targets(_targets(queries))
    )
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    return panel


def row(ids: Ids, title: str) -> dash.Row:
    return dash.Row(title).id(ids())


def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(dashboard.ThresholdsMode.ABSOLUTE)
        .steps([dashboard.Threshold(value=value, color=color) for value, color in steps])
    )


def single(
    ids: Ids,
    title: str,
    description: str,
    unit: str,
    queries: list[tuple[str, str]],
    *,
    width: int = 6,
    steps: tuple[tuple[float | None, str], ...] = ((None, "green"),),
    mappings: list[dashboard.ValueMapping] | None = None,
) -> stat.Panel:
    panel = (
        stat.Panel()
        .id(ids())
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(6)
        .thresholds(thresholds(*steps))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .targets(_targets(queries, instant=True))
    )
    return panel.mappings(mappings) if mappings else panel


def bars(
    ids: Ids,
    title: str,
    description: str,
    unit: str,
    queries: list[tuple[str, str]],
    *,
    width: int = 12,
    steps: tuple[tuple[float | None, str], ...] = ((None, "green"),),
    maximum: float | None = None,
) -> bargauge.Panel:
    panel = (
        bargauge.Panel()
        .id(ids())
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(8)
        .min(0)
        .thresholds(thresholds(*steps))
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .orientation(common.VizOrientation.HORIZONTAL)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .targets(_targets(queries, instant=True))
    )
    return panel.max(maximum) if maximum is not None else panel


def up_down() -> list[dashboard.ValueMapping]:
    return [
        dashboard.ValueMap(
            options={
                "0": dashboard.ValueMappingResult(text="down", color="red", index=0),
                "1": dashboard.ValueMappingResult(text="up", color="green", index=1),
            }
        )
    ]


def datasource_variable() -> dash.DatasourceVariable:
    return dash.DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def label_variable(name: str, label: str, metric: str, *, multi: bool = True) -> dash.QueryVariable:
    variable = (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({metric}, {name})")
        .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
    )
    if multi:
        variable = variable.multi(True).include_all(True).all_value(".*")
    return variable


def base(uid: str, title: str, description: str, *, time_from: str = "now-24h") -> dash.Dashboard:
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .editable()
        .refresh("1m")
        .time(time_from, "now")
        .timezone("utc")
        .tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
        .link(
            dash.DashboardLink("Antenna")
            .type(dashboard.DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
        .with_variable(datasource_variable())
    )

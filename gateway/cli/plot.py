"""``antenna usage --plot``: a project's use of each allocation over time, readable whatever its shape.

One row per active allocation: on the left the cumulative charge over the part of the period that has been
used (split per person when the caller sees everyone's, as a PI does), the reservation held now, the
projection at the last week's burn rate and, when in view, the grant and the period's end; on the right the
grant as one bar, charged, reserved and available. Legends sit below the data, never on it. Drawn from the
API's balance and usage documents only, with matplotlib's Agg backend so it works without a display.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cli.client import CliError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

BURN_WINDOW = timedelta(days=7)
MOST_PEOPLE = 6  # people drawn apart; the rest are summed as "others"
CHARGED, RESERVED, AVAILABLE, OVERRUN, GRANT = "#1f77b4", "#ff7f0e", "#e6e6e6", "#8c1c13", "#d62728"
# People's layers: no orange or red, which mean reserved and the grant here.
PEOPLE_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f")


class PlotError(Exception):
    """A plot that cannot be written where asked; the message says why, for the person."""


@dataclass(frozen=True)
class SiteUsage:
    """One allocation (site and unit, active period) and the charges booked against it."""

    site: str
    unit: str
    period_start: datetime
    period_end: datetime
    granted: Decimal
    charged: Decimal  # including overruns, as the usage lines sum them
    reserved: Decimal
    steps: list[tuple[datetime, Decimal]]  # cumulative charge after each entry, oldest first
    complete: bool  # False when the usage lines are only the caller's own (a member, not the PI)
    people: dict[str, list[tuple[datetime, Decimal]]] = field(default_factory=dict)  # each one's cumulative

    @property
    def committed(self) -> Decimal:
        return self.charged + self.reserved

    def burn_per_day(self, now: datetime, window: timedelta = BURN_WINDOW) -> Decimal:
        """Average charge per day over the window (or since the period began, if that is shorter)."""
        since = max(self.period_start, now - window)
        days = Decimal((now - since).total_seconds()) / Decimal(86400)
        if days <= 0:
            return Decimal(0)
        before = next((total for at, total in reversed(self.steps) if at < since), Decimal(0))
        return (self.charged - before) / days if self.complete else Decimal(0)

    def run_out(self, now: datetime, window: timedelta = BURN_WINDOW) -> datetime | None:
        """When charged + reserved reaches the grant at the recent burn rate; None if nothing burns."""
        burn = self.burn_per_day(now, window)
        if burn <= 0:
            return None
        left = max(Decimal(0), self.granted - self.charged - self.reserved)
        return now + timedelta(days=float(left / burn))


def site_usages(balance: Mapping[str, Any], usage: Mapping[str, Any], *, site: str | None = None) -> list[SiteUsage]:
    """The active allocations of a project, each with its cumulative charge, from the API's two documents."""
    out = []
    for b in balance["balances"]:
        if not b["active"] or (site is not None and b["site"] != site):
            continue
        start = datetime.fromisoformat(b["period_start"])
        lines = [
            line
            for line in usage["lines"]
            if line["site"] == b["site"]
            and line["unit"] == b["unit"]
            and datetime.fromisoformat(line["period_start"]) == start
        ]
        total, steps = Decimal(0), []
        people: dict[str, list[tuple[datetime, Decimal]]] = {}
        for line in sorted(lines, key=lambda item: item["at"]):
            at, amount = datetime.fromisoformat(line["at"]), Decimal(line["amount"])
            total += amount
            steps.append((at, total))
            own = people.setdefault(line["person"] or "(no person)", [])
            own.append((at, (own[-1][1] if own else Decimal(0)) + amount))
        project_total = Decimal(b["charged"]) + Decimal(b["overrun"])
        out.append(
            SiteUsage(
                site=b["site"],
                unit=b["unit"],
                period_start=start,
                period_end=datetime.fromisoformat(b["period_end"]),
                granted=Decimal(b["granted"]),
                charged=project_total,
                reserved=Decimal(b["reserved"]),
                steps=steps,
                complete=total == project_total,
                people=people,
            )
        )
    return sorted(out, key=lambda s: (s.site, s.unit))


def plot_target(path: Path) -> Path:
    """Where the picture goes: ``path``, with ``.png`` added when it has no extension. Refuses a format
    matplotlib cannot write, a missing folder or a folder, before anything is asked of the gateway."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError as exc:
        raise PlotError("plotting needs matplotlib: install antenna-gateway[plot]") from exc
    if path.is_dir():
        raise PlotError(f"{path} is a folder: give a file name, e.g. {path / 'usage.png'}")
    target = path if path.suffix else path.with_suffix(".png")
    kinds = FigureCanvasBase.get_supported_filetypes()
    if target.suffix[1:].lower() not in kinds:
        raise PlotError(f"cannot draw a {target.suffix} file; use one of {', '.join('.' + k for k in sorted(kinds))}")
    if not target.parent.is_dir():
        raise PlotError(f"no folder {target.parent} to write {target.name} into")
    return target


def write_usage_plot(
    path: Path,
    *,
    project: str,
    balance: Mapping[str, Any],
    usage: Mapping[str, Any],
    now: datetime,
    site: str | None = None,
) -> list[str]:
    """Draw one row per active allocation into ``path`` (its extension picks the format).

    Returns one line per allocation saying what the picture says, for the terminal.
    """
    import matplotlib.pyplot as plt

    fig, usages = usage_figure(project=project, balance=balance, usage=usage, now=now, site=site)
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise PlotError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)
    return [summary(item, now) for item in usages]


def usage_figure(
    *, project: str, balance: Mapping[str, Any], usage: Mapping[str, Any], now: datetime, site: str | None = None
) -> tuple[Figure, list[SiteUsage]]:
    """The figure of ``write_usage_plot``, not yet saved: rows of (over time, against the grant) axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    usages = site_usages(balance, usage, site=site)
    if not usages:
        raise CliError(f"{project} has no active allocation{' at ' + site if site else ''} to plot")
    fig, axes = plt.subplots(
        len(usages), 2, figsize=(12, 4.4 * len(usages)), squeeze=False, gridspec_kw={"width_ratios": [5, 1]}
    )
    fig.suptitle(f"{project}: use of each allocation", fontsize=13, x=0.01, ha="left")
    for (over_time, against_grant), item in zip(axes, usages, strict=True):
        _draw_over_time(over_time, item, now)
        _draw_against_grant(against_grant, item)
    fig.text(
        0.01,
        0.005,
        f"Drawn {now:%Y-%m-%d %H:%M} UTC. Projection: the last {BURN_WINDOW.days} days' burn rate, from what is "
        "charged and reserved now.",
        fontsize=8,
        color="#555555",
    )
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    return fig, usages


def summary(item: SiteUsage, now: datetime) -> str:
    used = (item.charged / item.granted) if item.granted else Decimal(0)
    head = f"{item.site} ({item.unit}): {used:.1%} of {item.granted.normalize():f} charged"
    run_out = item.run_out(now)
    if not item.complete:
        return f"{head}; only your own jobs are listed, so no projection"
    if item.charged >= item.granted:
        return f"{head}; over the grant by {(item.charged - item.granted).normalize():f} {item.unit}"
    if run_out is None:
        return f"{head}; nothing charged in the last {BURN_WINDOW.days} days"
    if run_out > item.period_end:
        return f"{head}; lasts the period (ends {item.period_end:%Y-%m-%d}) at the current burn rate"
    return f"{head}; runs out about {run_out:%Y-%m-%d} at the current burn rate"


def _x(at: datetime) -> float:
    import matplotlib.dates as mdates

    return float(mdates.date2num(at))  # type: ignore[no-untyped-call]


def _view_end(item: SiteUsage, now: datetime) -> datetime:
    """The right edge of the time axis: the whole period once a quarter of it has passed; before that, the
    used part and as long again (at least a week), so a first burst is not squeezed against the left edge."""
    elapsed = max(now - item.period_start, timedelta(0))
    if elapsed >= (item.period_end - item.period_start) / 4:
        return item.period_end
    return min(item.period_end, now + max(elapsed, timedelta(days=7)))


def _cumulative(steps: list[tuple[datetime, Decimal]], times: list[datetime]) -> list[float]:
    out, total, i = [], Decimal(0), 0
    for at in times:
        while i < len(steps) and steps[i][0] <= at:
            total = steps[i][1]
            i += 1
        out.append(float(total))
    return out


def _draw_charges(ax: Axes, item: SiteUsage, times: list[datetime]) -> None:
    """The cumulative charge as filled steps: one layer per person when the caller sees everyone's."""
    xs = [_x(at) for at in times]
    people = sorted(item.people.items(), key=lambda kv: kv[1][-1][1], reverse=True)
    if item.complete and len(people) > 1:
        shown = people[:MOST_PEOPLE]
        rest = [steps for _, steps in people[MOST_PEOPLE:]]
        layers = [(name, _cumulative(steps, times)) for name, steps in shown]
        if rest:
            summed = [sum(values) for values in zip(*(_cumulative(s, times) for s in rest), strict=True)]
            layers.append((f"{len(rest)} others", summed))
        names = [name for name, _ in layers]
        ax.stackplot(xs, *(v for _, v in layers), labels=names, step="post", colors=PEOPLE_COLOURS, alpha=0.85)
    else:
        label = "charged" if item.complete else "charged (your jobs only)"
        ax.fill_between(xs, _cumulative(item.steps, times), step="post", color=CHARGED, alpha=0.85, label=label)


def _draw_over_time(ax: Axes, item: SiteUsage, now: datetime) -> None:
    import matplotlib.dates as mdates

    end = _view_end(item, now)
    times = sorted({item.period_start, *(at for at, _ in item.steps), now})
    _draw_charges(ax, item, times)
    committed = float(item.committed)
    top = committed
    if item.reserved > 0:
        ax.vlines(_x(now), float(item.charged), committed, color=RESERVED, linewidth=6, label="reserved now")
    ax.axvline(_x(now), color="#999999", linewidth=1, linestyle="-", zorder=0)
    ax.annotate("now", (_x(now), 0.98), xycoords=("data", "axes fraction"), xytext=(3, 0), textcoords="offset points",
                ha="left", va="top", fontsize=8, color="#555555")  # fmt: skip
    run_out = item.run_out(now)
    if run_out is not None:
        until = min(run_out, end)
        reached = committed + float(item.burn_per_day(now)) * (until - now).total_seconds() / 86400
        ax.plot([_x(now), _x(until)], [committed, reached], color=CHARGED, linestyle="--", linewidth=1.5,
                label=f"at the last {BURN_WINDOW.days} days' rate")  # fmt: skip
        top = max(top, reached)
        if run_out <= end:
            ax.axvline(_x(run_out), color=GRANT, linestyle="--", linewidth=1, label=f"runs out {run_out:%Y-%m-%d}")
    granted = float(item.granted)
    scale = max(top * 1.2, 1.0)
    if granted <= scale * 1.6:  # close enough to draw without flattening the usage
        ax.axhline(granted, color=GRANT, linewidth=1.5, label=f"grant {item.granted.normalize():,f} {item.unit}")
        scale = max(scale, granted * 1.1)
    else:
        ax.annotate(f"grant {item.granted.normalize():,f} {item.unit}: above this scale (see the bar)",
                    (0.99, 0.97), xycoords="axes fraction", ha="right", va="top", fontsize=8, color=GRANT)  # fmt: skip
    if end == item.period_end:
        ax.axvline(_x(end), color="#555555", linestyle=":", linewidth=1.2, label=f"period ends {end:%Y-%m-%d}")
    else:
        ax.annotate(f"period ends {item.period_end:%Y-%m-%d} →", (0.99, 0.02), xycoords="axes fraction",
                    ha="right", va="bottom", fontsize=8, color="#555555")  # fmt: skip
    if not item.steps:
        ax.annotate("nothing charged yet", (0.5, 0.5), xycoords="axes fraction", ha="center", fontsize=11,
                    color="#777777")  # fmt: skip
    margin = (end - item.period_start) * 0.02
    ax.set_xlim(_x(item.period_start - margin), _x(end + margin))
    ax.set_ylim(0, scale)
    ax.set_ylabel(item.unit)
    ax.set_title(summary(item, now), fontsize=10, loc="left")
    ax.grid(visible=True, alpha=0.3)
    # matplotlib.dates carries no type hints.
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=8))  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %b %Y"))  # type: ignore[no-untyped-call]
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, fontsize=8, frameon=False)


def _draw_against_grant(ax: Axes, item: SiteUsage) -> None:
    """The grant as one bar: charged, reserved, then what is left; an overrun stands above the grant."""
    charged_in = float(min(item.charged, item.granted))
    reserved = float(item.reserved)
    overrun = float(max(item.charged - item.granted, Decimal(0)))
    available = float(max(item.granted - item.committed, Decimal(0)))
    parts = [(charged_in, CHARGED, "charged"), (reserved, RESERVED, "reserved"), (available, AVAILABLE, "available"),
             (overrun, OVERRUN, "over the grant")]  # fmt: skip
    bottom = 0.0
    for height, color, label in parts:
        if height > 0:
            ax.bar([0], [height], bottom=bottom, color=color, width=0.6, label=label)
            bottom += height
    granted = float(item.granted)
    ax.axhline(granted, color=GRANT, linewidth=1.5)
    ax.set_ylim(0, max(granted, bottom) * 1.08 or 1.0)
    ax.set_xlim(-0.6, 0.6)
    ax.set_xticks([])
    used = (item.committed / item.granted) if item.granted else Decimal(0)
    ax.set_title(f"{used:.0%} of the grant", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.04), ncol=1, fontsize=8, frameon=False)

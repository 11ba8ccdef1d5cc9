"""``antenna usage --plot``: a project's cumulative charge against its allocation per site, with the run-out date.

Drawn from the API's balance and usage documents (no other source), with matplotlib's Agg backend so it
works without a display. The projection uses the burn rate of the last ``window`` (a week by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cli.client import CliError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

BURN_WINDOW = timedelta(days=7)


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
        for line in sorted(lines, key=lambda item: item["at"]):
            total += Decimal(line["amount"])
            steps.append((datetime.fromisoformat(line["at"]), total))
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
            )
        )
    return sorted(out, key=lambda s: (s.site, s.unit))


def write_usage_plot(
    path: Path,
    *,
    project: str,
    balance: Mapping[str, Any],
    usage: Mapping[str, Any],
    now: datetime,
    site: str | None = None,
) -> list[str]:
    """Draw one panel per active allocation into ``path`` (PNG, or any format matplotlib infers).

    Returns one line per allocation saying what the picture says, for the terminal.
    """
    try:
        import matplotlib
    except ImportError as exc:
        raise CliError("plotting needs matplotlib: install antenna-gateway[plot]") from exc
    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    usages = site_usages(balance, usage, site=site)
    if not usages:
        raise CliError(f"{project} has no active allocation{' at ' + site if site else ''} to plot")
    fig, axes = plt.subplots(len(usages), 1, figsize=(10, 3.6 * len(usages)), squeeze=False)
    fig.suptitle(f"{project}: cumulative charge against the allocation, per site", fontsize=13)
    for ax, item in zip(axes[:, 0], usages, strict=True):
        _draw(ax, item, now)
        # matplotlib.dates carries no type hints.
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=10))  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %b %Y"))  # type: ignore[no-untyped-call]
    fig.text(
        0.01,
        0.005,
        f"Drawn {now:%Y-%m-%d %H:%M} UTC. Projection: the last {BURN_WINDOW.days} days' burn rate, "
        "from what is charged and reserved now.",
        fontsize=8,
        color="#555555",
    )
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [summary(item, now) for item in usages]


def summary(item: SiteUsage, now: datetime) -> str:
    used = (item.charged / item.granted) if item.granted else Decimal(0)
    head = f"{item.site} ({item.unit}): {used:.1%} of {item.granted.normalize():f} charged"
    run_out = item.run_out(now)
    if not item.complete:
        return f"{head}; only your own jobs are listed, so no projection"
    if run_out is None:
        return f"{head}; nothing charged in the last {BURN_WINDOW.days} days"
    if run_out > item.period_end:
        return f"{head}; lasts the period (ends {item.period_end:%Y-%m-%d}) at the current burn rate"
    return f"{head}; runs out about {run_out:%Y-%m-%d} at the current burn rate"


def _x(at: datetime) -> float:
    import matplotlib.dates as mdates

    return float(mdates.date2num(at))  # type: ignore[no-untyped-call]


def _draw(ax: Axes, item: SiteUsage, now: datetime) -> None:
    times = [_x(item.period_start), *(_x(at) for at, _ in item.steps), _x(now)]
    totals = [0.0, *(float(total) for _, total in item.steps)]
    totals.append(totals[-1])
    label = "charged" if item.complete else "charged (your jobs only)"
    ax.step(times, totals, where="post", color="#1f77b4", linewidth=2, label=label)
    granted = float(item.granted)
    ax.axhline(granted, color="#d62728", linewidth=1.5, label=f"allocation {item.granted.normalize():f} {item.unit}")
    ax.axvline(
        _x(item.period_end),
        color="#7f7f7f",
        linestyle=":",
        linewidth=1,
        label=f"period ends {item.period_end:%Y-%m-%d}",
    )
    committed = float(item.charged + item.reserved)
    if item.reserved > 0:
        ax.plot([_x(now)], [committed], marker="o", color="#ff7f0e", linestyle="", label="charged + reserved now")
    ax.axvline(_x(now), color="#bbbbbb", linewidth=1, label=f"now ({now:%Y-%m-%d})")
    run_out = item.run_out(now)
    if run_out is not None:
        end = min(run_out, item.period_end)
        burn = float(item.burn_per_day(now))
        reached = committed + burn * (end - now).total_seconds() / 86400
        ax.plot(
            [_x(now), _x(end)], [committed, reached], color="#1f77b4", linestyle="--", linewidth=1.5, label="projection"
        )
        if run_out <= item.period_end:
            ax.axvline(_x(run_out), color="#d62728", linestyle="--", linewidth=1, label=f"runs out {run_out:%Y-%m-%d}")
    ax.set_title(summary(item, now), fontsize=10, loc="left")
    margin = (item.period_end - item.period_start) * 0.03
    ax.set_xlim(_x(item.period_start - margin), _x(item.period_end + margin))
    ax.set_ylim(0, max(granted, committed) * 1.1 or 1.0)
    ax.set_ylabel(item.unit)
    ax.grid(visible=True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)

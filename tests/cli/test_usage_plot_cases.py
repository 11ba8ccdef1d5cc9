"""`antenna usage --plot` for the shapes usage really takes: nothing yet, a burst on the first day of a
year-long period, steady use, an overrun, and several sites with a PI's per-person split.

Each picture is written (to ``ANTENNA_PLOT_DIR`` when set, to look at them; else a temporary folder) and its
figure checked for what a reader relies on: the used part of the period in view, the usage not flattened
under the grant, the legends below the data, every person named, the period's end marked.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pytest

from gateway.cli.plot import PlotError, plot_target, usage_figure, write_usage_plot

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)


def _period(start: datetime, days: int) -> dict[str, str]:
    return {"period_start": start.isoformat(), "period_end": (start + timedelta(days=days)).isoformat()}


def _balance(site: str, unit: str, granted: int, charged: Decimal, reserved: Decimal, start: datetime, days: int):
    overrun = max(charged - granted, Decimal(0))
    return {
        "site": site, "unit": unit, "active": True, "granted": str(granted), "charged": str(charged - overrun),
        "overrun": str(overrun), "reserved": str(reserved), "available": str(granted - charged - reserved),
        **_period(start, days),
    }  # fmt: skip


def _line(site: str, unit: str, at: datetime, amount: Decimal, person: str, start: datetime) -> dict[str, Any]:
    return {"site": site, "unit": unit, "at": at.isoformat(), "amount": str(amount), "person": person,
            "period_start": start.isoformat(), "job_id": None, "kind": "charge"}  # fmt: skip


def _case(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(balance, usage) documents for one shape of usage."""
    lines: list[dict[str, Any]] = []
    balances = []
    if name == "empty":
        start = NOW - timedelta(days=20)
        balances.append(_balance("lumi", "gpu-hours", 5000, Decimal(0), Decimal(0), start, 365))
    elif name == "burst-on-day-one":
        start = NOW - timedelta(days=2)
        for hour in range(0, 20, 2):
            lines.append(_line("lumi", "gpu-hours", start + timedelta(hours=hour), Decimal(12), "ana@x.eu", start))
        balances.append(_balance("lumi", "gpu-hours", 5000, Decimal(120), Decimal(40), start, 365))
    elif name == "steady":
        start = NOW - timedelta(days=120)
        for day in range(120):
            lines.append(_line("lumi", "gpu-hours", start + timedelta(days=day, hours=9), Decimal(30), "ana@x.eu",
                               start))  # fmt: skip
        balances.append(_balance("lumi", "gpu-hours", 10000, Decimal(3600), Decimal(64), start, 365))
    elif name == "overrun":
        start = NOW - timedelta(days=60)
        for day in range(60):
            lines.append(_line("lucia", "cpu-core-hours", start + timedelta(days=day), Decimal(2000), "ana@x.eu",
                               start))  # fmt: skip
        balances.append(_balance("lucia", "cpu-core-hours", 100000, Decimal(120000), Decimal(0), start, 90))
    elif name == "several-sites-per-person":
        start = NOW - timedelta(days=45)
        people = ["ana@x.eu", "ben@x.eu", "cleo@x.eu", "dan@x.eu", "eva@x.eu", "fay@x.eu", "gus@x.eu", "hal@x.eu"]
        total = Decimal(0)
        for day in range(45):
            for i, person in enumerate(people):
                if (day + i) % 3 == 0:
                    amount = Decimal(5 + 3 * i)
                    total += amount
                    lines.append(_line("lumi", "gpu-hours", start + timedelta(days=day, hours=i), amount, person,
                                       start))  # fmt: skip
        balances.append(_balance("lumi", "gpu-hours", 6000, total, Decimal(100), start, 180))
        jupiter = NOW - timedelta(days=10)
        for day in range(10):
            lines.append(_line("jupiter", "gpu-hours", jupiter + timedelta(days=day), Decimal(80), "ben@x.eu",
                               jupiter))  # fmt: skip
        balances.append(_balance("jupiter", "gpu-hours", 20000, Decimal(800), Decimal(0), jupiter, 365))
    else:  # pragma: no cover
        raise AssertionError(name)
    return {"project": "demo", "balances": balances}, {"project": "demo", "lines": lines}


CASES = ["empty", "burst-on-day-one", "steady", "overrun", "several-sites-per-person"]


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    wanted = os.environ.get("ANTENNA_PLOT_DIR")
    folder = Path(wanted) if wanted else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.parametrize("case", CASES)
def test_every_shape_of_usage_draws_readably(case: str, out_dir: Path) -> None:
    balance, usage = _case(case)
    path = out_dir / f"usage-{case}.png"
    lines = write_usage_plot(path, project="demo", balance=balance, usage=usage, now=NOW)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(lines) == len(balance["balances"])

    fig, usages = usage_figure(project="demo", balance=balance, usage=usage, now=NOW)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    for over_time, item in zip(fig.axes[0::2], usages, strict=True):
        left, right = over_time.get_xlim()
        # The time axis starts at the period's start and reaches past now.
        assert left <= mdates.date2num(item.period_start) < mdates.date2num(NOW) < right
        # Legends sit below the axes, never over the data.
        legend = over_time.get_legend()
        assert legend.get_window_extent(renderer).y1 <= over_time.get_window_extent(renderer).y0
        # The scale is the data's (what is committed, and its projection), not a far-away grant's: what is
        # committed never shrinks to a sliver at the bottom.
        if item.committed > 0:
            assert float(item.committed) / over_time.get_ylim()[1] > 0.2
        labels = [t.get_text() for t in legend.get_texts()]
        texts = " ".join([*labels, *(t.get_text() for t in over_time.texts)])
        assert "period ends" in texts
    plt.close(fig)


def test_a_burst_on_day_one_of_a_year_is_not_squeezed_against_the_edge() -> None:
    balance, usage = _case("burst-on-day-one")
    fig, _ = usage_figure(project="demo", balance=balance, usage=usage, now=NOW)
    left, right = fig.axes[0].get_xlim()
    # Two days used of 365: the view is weeks wide, not the year.
    assert right - left < 30
    assert any("period ends 2027-03-08" in t.get_text() for t in fig.axes[0].texts)
    plt.close(fig)


def test_a_pi_sees_each_person_and_the_rest_summed() -> None:
    balance, usage = _case("several-sites-per-person")
    fig, usages = usage_figure(project="demo", balance=balance, usage=usage, now=NOW)
    lumi = next(i for i, u in enumerate(usages) if u.site == "lumi")
    labels = [t.get_text() for t in fig.axes[2 * lumi].get_legend().get_texts()]
    assert "hal@x.eu" in labels  # the biggest spender first
    assert "2 others" in labels
    plt.close(fig)


def test_an_overrun_is_drawn_above_the_grant() -> None:
    balance, usage = _case("overrun")
    fig, _ = usage_figure(project="demo", balance=balance, usage=usage, now=NOW)
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert "over the grant" in labels
    plt.close(fig)


@pytest.mark.parametrize(
    ("given", "problem"),
    [("usage.xyz", "cannot draw a .xyz file"), ("missing/dir/u.png", "no folder"), (".", "is a folder")],
)
def test_a_target_that_cannot_be_written_is_named(given: str, problem: str, tmp_path: Path) -> None:
    with pytest.raises(PlotError, match=problem):
        plot_target(tmp_path / given if given != "." else tmp_path)


def test_a_name_without_extension_becomes_png(tmp_path: Path) -> None:
    assert plot_target(tmp_path / "usage") == tmp_path / "usage.png"

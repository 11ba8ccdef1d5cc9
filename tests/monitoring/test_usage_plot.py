"""`antenna usage --plot`: the picture of a project's cumulative charge against its allocation, per site.

The gateway runs for real (uvicorn thread, SQLite); forty days of charges are booked through the ledger's
own reserve/settle with past dates, and the CLI draws them through the API like a PI would.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gateway.cli.main import app
from gateway.devmode import PI
from gateway.identity import Role
from gateway.ledger import service as ledger
from tests.monitoring.stack import Gateway, run_gateway

PROJECT = "climate"
LUMI_GRANT, LUCIA_GRANT = Decimal(2000), Decimal(500_000)
OPEN_RESERVATION = Decimal(24)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class History:
    gateway: Gateway
    token: str
    now: datetime
    lumi_charges: list[tuple[datetime, Decimal]]


def _lumi_charge(day: int) -> Decimal:
    return Decimal(30 + (day % 5) * 5)  # 30..50 GPU-hours a day, 1,600 over forty days


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    with run_gateway(tmp_path_factory.mktemp("plot-gateway")) as gw:
        now = datetime.now(UTC)
        start = now - timedelta(days=40)
        lumi: list[tuple[datetime, Decimal]] = []

        def book(session: Any) -> None:
            for site, unit, amount, end in (
                ("lumi", "gpu-hours", LUMI_GRANT, now + timedelta(days=50)),
                ("lucia", "cpu-core-hours", LUCIA_GRANT, now + timedelta(days=320)),
            ):
                ledger.set_allocation(
                    session,
                    project=PROJECT,
                    site=site,
                    unit=unit,
                    amount=amount,
                    start=start,
                    end=end,
                    actor="test",
                    reason="plot test",
                    at=start,
                )
            for day in range(40):
                at = start + timedelta(days=day, hours=12)
                for site, unit, amount in (
                    ("lumi", "gpu-hours", _lumi_charge(day)),
                    ("lucia", "cpu-core-hours", Decimal(1000)),
                ):
                    job = f"history-{site}-{day}"
                    ledger.reserve(
                        session,
                        job_id=job,
                        project=PROJECT,
                        site=site,
                        unit=unit,
                        amount=amount,
                        person=PI.person,
                        at=at,
                    )
                    ledger.settle(session, job_id=job, outcome="charge", amount=amount, at=at + timedelta(hours=2))
                    if site == "lumi":
                        lumi.append((at + timedelta(hours=2), amount))
            ledger.reserve(
                session,
                job_id="history-open",
                project=PROJECT,
                site="lumi",
                unit="gpu-hours",
                amount=OPEN_RESERVATION,
                person=PI.person,
                at=now,
            )

        gw.runtime.db.run(book)
        token = gw.mode.issuer.mint(PI.person, projects={PROJECT: Role.PI}, lifetime_seconds=3600)
        yield History(gw, token, now, lumi)


def _cli(history: History, tmp_path: Path, *args: str) -> Any:
    env = {"ANTENNA_TOKEN": history.token, "ANTENNA_CLI_HOME": str(tmp_path / "cli"), "COLUMNS": "200"}
    return CliRunner().invoke(app, [*args, "--url", history.gateway.url], env=env)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _expected_run_out(history: History, now: datetime) -> str:
    charged = sum((amount for _, amount in history.lumi_charges), Decimal(0))
    last_week = sum((amount for at, amount in history.lumi_charges if at >= now - timedelta(days=7)), Decimal(0))
    left = LUMI_GRANT - charged - OPEN_RESERVATION
    return f"{now + timedelta(days=float(left / (last_week / 7))):%Y-%m-%d}"


def test_usage_plot_draws_each_site_with_its_run_out(history: History, tmp_path: Path) -> None:
    picture = tmp_path / "usage.png"
    result = _cli(history, tmp_path, "usage", "--project", PROJECT, "--plot", str(picture))
    assert result.exit_code == 0, result.output
    data = picture.read_bytes()
    # One 12 x 4.4 inch row per active allocation (two sites) at 110 dpi.
    assert _png_size(data) == (1320, 968)
    assert len(data) > 40_000  # lines, text and legends, not a blank canvas
    # What the picture says, also on the terminal: lumi runs out within its period, lucia lasts it.
    lines = {line.split(" ", 1)[0]: line for line in result.output.splitlines() if line.startswith(("lumi", "lucia"))}
    assert lines["lumi"].startswith("lumi (gpu-hours): 80.0% of 2000 charged; runs out about ")
    later = datetime.now(UTC)
    assert lines["lumi"].split("about ")[1][:10] in {
        _expected_run_out(history, history.now),
        _expected_run_out(history, later),
    }
    assert lines["lucia"].startswith("lucia (cpu-core-hours): 8.0% of 500000 charged; lasts the period")
    assert f"plot written to {picture}" in result.output.replace("\n", "")


def test_usage_plot_of_one_site(history: History, tmp_path: Path) -> None:
    picture = tmp_path / "lucia.png"
    result = _cli(history, tmp_path, "usage", "--project", PROJECT, "--site", "lucia", "--plot", str(picture))
    assert result.exit_code == 0, result.output
    assert _png_size(picture.read_bytes()) == (1320, 484)
    assert "lumi" not in result.output


def test_usage_plot_refuses_a_project_without_allocation(history: History, tmp_path: Path) -> None:
    picture = tmp_path / "none.png"
    result = _cli(history, tmp_path, "usage", "--project", PROJECT, "--site", "jupiter", "--plot", str(picture))
    assert result.exit_code == 1
    assert "no active allocation at jupiter" in result.output
    assert not picture.exists()

"""How the client shows the API's documents: tables that fit 80 columns, and ``--wide`` for every field."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from rich import box
from rich.table import Table

SHORT_ID = 8  # as git does: enough to tell one's jobs apart; every command takes any unique prefix


def _table(*columns: str, title: str | None = None, caption: str | None = None) -> Table:
    # One space between columns, none at the edges: what fits in 80 columns is worth more than a frame.
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=0,
        title=title,
        caption=caption,
        title_justify="left",
    )
    for name in columns:
        table.add_column(name, no_wrap=True, overflow="ellipsis")
    return table


def unit_label(unit: str) -> str:
    """``cpu-core-hours`` → ``core-h``: the unit, short enough for a table cell."""
    short = unit.removeprefix("cpu-")
    return short.removesuffix("-hours") + "-h" if short.endswith("-hours") else short


def amount(value: str | None) -> str:
    """A decimal string for reading: two places from 1 up, the first non-zero digits below (a minute of one
    core is 0.016667, not 0.00); the exact value is in ``--json`` and ``--wide``."""
    if value is None:
        return ""
    number = Decimal(value)
    if number == 0:
        return "0"
    if abs(number) >= 1:
        return f"{number:,.2f}"
    return f"{number:.6f}".rstrip("0")


def when(value: str | None) -> str:
    return datetime.fromisoformat(value).strftime("%m-%d %H:%M") if value else ""


def cost(job: dict[str, Any]) -> str:
    """What the job costs: its charge once settled, else what is reserved for it (at most that)."""
    label = unit_label(job["unit"])
    if job["charged"] is not None:
        return f"{amount(job['charged'])} {label}"
    return f"≤ {amount(job['reserved'])} {label}"


def jobs_table(jobs: list[dict[str, Any]], *, wide: bool = False) -> Table:
    if wide:
        table = _table(
            "id", "project", "person", "site", "partition", "name", "state", "reserved", "charged", "unit",
            "exit", "created", "ended",
        )  # fmt: skip
        for j in jobs:
            table.add_row(
                j["id"], j["project"], j["person"], j["site"], j["partition"], j["name"], j["state"], j["reserved"],
                j["charged"] or "", j["unit"], "" if j["exit_code"] is None else str(j["exit_code"]),
                j["created_at"], j["ended_at"] or "",
            )  # fmt: skip
        return table
    table = _table("id", "name", "site", "state", "cost", "created")
    table.columns[1].max_width = 16
    for j in jobs:
        table.add_row(
            j["id"][:SHORT_ID], j["name"], f"{j['site']}/{j['partition']}", j["state"], cost(j), when(j["created_at"])
        )
    return table


def history_table(job: dict[str, Any]) -> Table:
    table = _table("state", "at", "detail")
    table.columns[2].no_wrap = False
    for event in job["history"]:
        table.add_row(event["state"], event["at"][:19].replace("T", " "), event["detail"])
    return table


def _bar(used: Decimal, width: int = 10) -> str:
    filled = max(0, min(width, int(used * width)))
    return "█" * filled + "░" * (width - filled)


def balance_table(doc: dict[str, Any], *, wide: bool = False) -> Table:
    rows = doc["balances"]
    periods = sorted({(b["period_start"][:10], b["period_end"][:10]) for b in rows if b["active"]})
    caption = "; ".join(f"period {start} → {end}" for start, end in periods) or None
    if wide:
        table = _table("site", "unit", "period", "active", "granted", "charged", "overrun", "reserved", "available",
                       title=doc["project"])  # fmt: skip
        for b in rows:
            table.add_row(
                b["site"], b["unit"], f"{b['period_start']} → {b['period_end']}", "yes" if b["active"] else "no",
                b["granted"], b["charged"], b["overrun"], b["reserved"], b["available"],
            )  # fmt: skip
        return table
    table = _table("site", "unit", "granted", "charged", "reserved", "available", "used", title=doc["project"],
                   caption=caption)  # fmt: skip
    for b in rows:
        if not b["active"]:
            continue  # past and future periods: --wide
        granted = Decimal(b["granted"])
        used = (Decimal(b["charged"]) + Decimal(b["reserved"])) / granted if granted else Decimal(0)
        table.add_row(
            b["site"], unit_label(b["unit"]), amount(b["granted"]), amount(b["charged"]), amount(b["reserved"]),
            amount(b["available"]), f"{_bar(used)} {used:.0%}",
        )  # fmt: skip
    return table


def usage_table(doc: dict[str, Any], *, wide: bool = False) -> Table:
    if wide:
        table = _table("at", "job", "person", "site", "unit", "kind", "amount", title=doc["project"])
        for line in doc["lines"]:
            table.add_row(line["at"], line["job_id"] or "", line["person"] or "", line["site"], line["unit"],
                          line["kind"], line["amount"])  # fmt: skip
        return table
    table = _table("at", "job", "person", "site", "kind", "amount", title=doc["project"])
    table.columns[2].max_width = 22
    for line in doc["lines"]:
        table.add_row(
            when(line["at"]), (line["job_id"] or "")[:SHORT_ID], line["person"] or "", line["site"], line["kind"],
            f"{amount(line['amount'])} {unit_label(line['unit'])}",
        )  # fmt: skip
    return table


def sites_table(sites: list[dict[str, Any]], *, wide: bool = False) -> Table:
    columns = ["site", "partition", "billed in", "max time", "nodes", "per node"]
    if wide:
        columns += ["billing", "connector", "health"]
    table = _table(*columns)
    for site in sites:
        for p in site["partitions"]:
            gpus = f", {p['gpus_per_node']} GPUs" if p["gpus_per_node"] else ""
            row = [
                site["name"] if wide else f"{site['name']} {'up' if site['healthy'] else 'DOWN'}",
                p["name"],
                unit_label(p["unit"]) + (", whole nodes" if p["exclusive"] else ""),
                f"{p['max_time_minutes'] // 60}:{p['max_time_minutes'] % 60:02d} h",
                f"≤ {p['max_nodes']}",
                f"{p['cores_per_node']} cores, {p['memory_gb_per_node']} GB{gpus}",
            ]
            if wide:
                health = "up" if site["healthy"] else f"down: {site['last_error']}"
                row += [p["billing"], site["connector"], health]
            table.add_row(*row)
    return table

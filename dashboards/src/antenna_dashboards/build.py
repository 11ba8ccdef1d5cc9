"""Every dashboard rendered to the JSON Grafana imports, keyed by file name."""

from __future__ import annotations

import json

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from antenna_dashboards import allocations, gateway, operations, sites

MODULES = (allocations, sites, gateway, operations)


def render_all() -> dict[str, str]:
    out: dict[str, str] = {}
    for module in MODULES:
        board = module.dashboard().build()
        out[f"{board.uid}.json"] = json.dumps(board, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
    return out

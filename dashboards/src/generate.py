"""Writes the Grafana dashboards to dashboards/grafana/.

`uv run python dashboards/src/generate.py` regenerates them; `--check` only reports stale files.
"""

from __future__ import annotations

import sys
from pathlib import Path

from antenna_dashboards.build import render_all

OUT = Path(__file__).resolve().parent.parent / "grafana"


def main(argv: list[str]) -> int:
    rendered = render_all()
    if "--check" in argv:
        stale = sorted(
            name for name, text in rendered.items() if not (OUT / name).exists() or (OUT / name).read_text() != text
        )
        extra = sorted(p.name for p in OUT.glob("*.json") if p.name not in rendered)
        for name in stale + extra:
            print(f"dashboards/grafana/{name} is out of date", file=sys.stderr)
        return 1 if stale or extra else 0
    OUT.mkdir(exist_ok=True)
    for path in OUT.glob("*.json"):
        if path.name not in rendered:
            path.unlink()
    for name, text in rendered.items():
        (OUT / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

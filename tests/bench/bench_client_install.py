"""The researcher's install, measured: its size on disk, `antenna --help` cold start, and `antenna jobs`
against a local gateway (`antenna dev`), each beside the same command of the all-in-one development
environment (`.venv`, server and operator tools included) in the same run.

    uv run python tests/bench/bench_client_install.py [--runs 15] [--typer 0.29.2]

``--typer`` installs that typer version in the client environment instead of the locked one, to compare.

Builds the wheel, installs it without extras into a fresh virtual environment (`uv pip install`, packages
from the uv cache or the index), and times fresh processes (page cache warm: what a person sees on their
second command of the day).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def timed(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--typer", help="another typer version in the client install, to compare")
    args = parser.parse_args()
    uv = os.environ.get("UV") or shutil.which("uv") or "uv"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run([uv, "build", "--wheel", "--out-dir", str(work), "--quiet"], cwd=REPO, check=True)
        wheel = next(work.glob("*.whl"))
        venv = work / "client"
        subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
        extra = []
        if args.typer:  # over the wheel's own bound: the point is to compare
            (work / "overrides.txt").write_text(f"typer=={args.typer}\n")
            extra = ["--overrides", str(work / "overrides.txt")]
        subprocess.run(
            [uv, "pip", "install", "--quiet", "--python", str(venv / "bin/python"), str(wheel), *extra], check=True
        )
        client_mb = size_mb(venv)
        full_mb = size_mb(REPO / ".venv")

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "ANTENNA_CLI_HOME": str(work / "cli"), "COLUMNS": "80"}
        env.pop("ANTENNA_TOKEN", None)
        gateway = subprocess.Popen(
            [str(REPO / ".venv/bin/antenna"), "dev", "--data-dir", str(work / "dev"), "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            rows = []
            for label, bin_dir in (("client install", venv / "bin"), ("development .venv", REPO / ".venv/bin")):
                help_s = timed([str(bin_dir / "antenna"), "--help"], env, args.runs)
                jobs_s = timed([str(bin_dir / "antenna"), "jobs"], env, args.runs)
                rows.append((label, help_s, jobs_s))
        finally:
            gateway.terminate()
            gateway.wait(timeout=30)
    print(f"machine: {os.cpu_count()} cores; {args.runs} runs each, median; typer {args.typer or 'as locked'}")
    print(f"installed size: client {client_mb:.1f} MB; development .venv {full_mb:.1f} MB")
    for label, help_s, jobs_s in rows:
        print(f"{label:<18} antenna --help {help_s * 1000:6.0f} ms   antenna jobs {jobs_s * 1000:6.0f} ms")


if __name__ == "__main__":
    main()

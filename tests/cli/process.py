"""The ``antenna`` command run as a person runs it: a fresh process of this checkout's client (``python -m
gateway.cli``), its environment given explicitly; and a client-only install, imitated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARGV = [sys.executable, "-m", "gateway.cli"]

CLIENT_ONLY = """
import importlib.util
_find = importlib.util.find_spec
def find_spec(name, package=None):
    if name.split(".")[0] in {"fastapi", "pulumi", "keycloak", "hvac"}:
        return None
    return _find(name, package)
importlib.util.find_spec = find_spec
"""


def cli_env(overrides: dict[str, str | None] | None = None, *, path: str = str(REPO)) -> dict[str, str]:
    """This process's environment with ``overrides`` (None removes a variable), no ANTENNA_DEBUG (its tracebacks
    are what the tests look for), and this checkout importable."""
    merged: dict[str, str | None] = {**os.environ, "ANTENNA_DEBUG": None, **(overrides or {}), "PYTHONPATH": path}
    return {name: value for name, value in merged.items() if value is not None}


def antenna(
    *args: str, env: dict[str, str | None] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ARGV, *args], env=cli_env(env), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def client_only(folder: Path) -> dict[str, str]:
    """The environment of a client-only install, imitated: the extras' libraries are not found (so their
    commands are not listed), through a sitecustomize on the path."""
    (folder / "sitecustomize.py").write_text(CLIENT_ONLY)
    return cli_env(path=f"{folder}{os.pathsep}{REPO}")

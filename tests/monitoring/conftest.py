"""Monitoring test fixtures: Prometheus and promtool from Debian's ``prometheus`` package, installed once.

The suite-wide installer (tests/support/tools.py) is idempotent and FAILS, never skips, when it cannot
install: the rule tests and the dashboards-against-a-real-Prometheus test mean nothing without the binaries.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.tools import ensure_promtool


@dataclass(frozen=True)
class PrometheusTools:
    prometheus: Path
    promtool: Path


@pytest.fixture(scope="session")
def prometheus_tools() -> PrometheusTools:
    promtool = ensure_promtool()  # Debian's package carries both the server and promtool
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("Debian's `prometheus` package is installed but the `prometheus` server is not on PATH")
    version = subprocess.run([str(promtool), "--version"], capture_output=True, text=True, check=False)
    if version.returncode != 0:
        pytest.fail(f"promtool does not run: {version.stderr}")
    return PrometheusTools(Path(prometheus), promtool)

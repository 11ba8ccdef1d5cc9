"""Monitoring test fixtures: Prometheus and promtool from Debian's ``prometheus`` package, installed once.

The installer is idempotent and FAILS (never skips) when it cannot install: the rule tests and the
dashboards-against-a-real-Prometheus test mean nothing without the real binaries.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "prometheus"
POLICY_RC = Path("/usr/sbin/policy-rc.d")
LOCK = Path("/tmp/antenna-prometheus-install.lock")  # serialises concurrent sessions' installs


@dataclass(frozen=True)
class PrometheusTools:
    prometheus: Path
    promtool: Path


def _found() -> PrometheusTools | None:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus and promtool:
        return PrometheusTools(Path(prometheus), Path(promtool))
    return None


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", "-o", "DPkg::Lock::Timeout=600", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )


def ensure_prometheus() -> PrometheusTools:
    """Install Debian's ``prometheus`` (2.42: the server and promtool) if missing, without starting its service.

    The package's maintainer script would start a system Prometheus on :9090; a policy-rc.d that forbids
    service starts (created only for the install when the machine has none) keeps the port free.
    """
    tools = _found()
    if tools is not None:
        return tools
    if os.geteuid() != 0:
        pytest.fail("promtool/prometheus are missing and installing Debian's `prometheus` needs root")
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tools = _found()
        if tools is not None:
            return tools
        created_policy = not POLICY_RC.exists()
        if created_policy:
            POLICY_RC.write_text("#!/bin/sh\n# no service starts during the test suite's package installs\nexit 101\n")
            POLICY_RC.chmod(0o755)
        try:
            update = _apt("update", "-qq")
            install = _apt("install", "-y", "-qq", "--no-install-recommends", PACKAGE)
        finally:
            if created_policy:
                POLICY_RC.unlink(missing_ok=True)
        tools = _found()
        if install.returncode != 0 or tools is None:
            pytest.fail(
                "could not install Debian's `prometheus` package (Prometheus and promtool are required):\n"
                f"apt-get update: {update.stderr[-1500:]}\napt-get install: {install.stderr[-3000:]}"
            )
        return tools


def _support_installer() -> PrometheusTools | None:
    """Prefer the suite-wide installer in tests/support/tools.py when one exists."""
    try:
        from tests.support import tools as support  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return None
    install = getattr(support, "ensure_promtool", None) or getattr(support, "ensure_prometheus", None)
    if install is None:
        return None
    install()
    return _found()


@pytest.fixture(scope="session")
def prometheus_tools() -> PrometheusTools:
    tools = _support_installer() or ensure_prometheus()
    version = subprocess.run([str(tools.promtool), "--version"], capture_output=True, text=True, check=False)
    if version.returncode != 0:
        pytest.fail(f"promtool does not run: {version.stderr}")
    return tools

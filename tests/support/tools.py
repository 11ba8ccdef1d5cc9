"""Outside tools the suite runs, installed on first use so that CI on a fresh Debian machine has them.

``ensure_promtool()`` installs Debian's ``prometheus`` package (the server and ``promtool``) when
``promtool`` is missing. It is idempotent, serialised across concurrent test sessions, never starts the
packaged service, and FAILS (never skips) when it cannot install.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

PACKAGE = "prometheus"
POLICY_RC = Path("/usr/sbin/policy-rc.d")
LOCK = Path("/tmp/antenna-prometheus-install.lock")  # the same lock as any other installer of the package


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", "-o", "DPkg::Lock::Timeout=600", *args],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )


def _promtool() -> Path | None:
    found = shutil.which("promtool")
    return Path(found) if found else None


def ensure_promtool() -> Path:
    """The path of ``promtool``, installing Debian's ``prometheus`` first if it is missing."""
    found = _promtool()
    if found is not None:
        return found
    if os.geteuid() != 0:
        pytest.fail("promtool is missing and installing Debian's `prometheus` package needs root")
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _promtool()
        if found is not None:
            return found
        # The package's maintainer script would start a system Prometheus on :9090; forbid service
        # starts during the install (only when the machine has no policy of its own).
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
        found = _promtool()
        if install.returncode != 0 or found is None:
            pytest.fail(
                f"could not install Debian's `{PACKAGE}` package, which provides promtool:\n"
                f"apt-get update: {update.stderr[-1500:]}\napt-get install: {install.stderr[-3000:]}"
            )
        return found

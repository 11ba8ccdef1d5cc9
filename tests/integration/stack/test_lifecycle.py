"""The stack script itself: a second `up` reuses what runs; a stopped daemon comes back with `up`."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.integration.stack.test_slurmrestd import API, client
from tests.stack.plugin import SCRIPT, SlurmStack

pytestmark = pytest.mark.integration


def running_pids() -> dict[str, str]:
    status = subprocess.run([str(SCRIPT), "status"], capture_output=True, text=True, check=False)
    pids = {}
    for line in status.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[1:3] == ["running", "pid"]:
            pids[parts[0]] = parts[3]
    return pids


def test_a_second_up_reuses_every_running_daemon(slurm_stack: SlurmStack) -> None:
    before = running_pids()
    assert {"munged", "sshd", "lumi-slurmctld", "lucia-slurmdbd", "jupiter-slurmrestd"} <= set(before)
    slurm_stack.start()
    assert running_pids() == before


def test_a_stopped_slurmrestd_comes_back_with_up(slurm_stack: SlurmStack) -> None:
    lumi = slurm_stack.cluster("lumi")
    slurm_stack.stop("lumi-slurmrestd")
    try:
        assert "lumi-slurmrestd" not in running_pids()
        with pytest.raises(httpx.ConnectError), client(lumi, "alice") as http:
            http.get(f"{API}/ping")
        # The other clusters are untouched.
        with client(slurm_stack.cluster("lucia"), "alice") as http:
            assert http.get(f"{API}/ping").status_code == 200
    finally:
        slurm_stack.start()
    with client(lumi, "alice") as http:
        assert http.get(f"{API}/ping").status_code == 200

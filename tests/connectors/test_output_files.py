"""Where a job's output lands at a site: named by the gateway's job id, so that two clusters sharing a home file
system (several clusters of one centre, or the test stack's three) never write the same file. Slurm's job ids
are per cluster: with ``%j`` alone, job 2 at one cluster overwrote job 2's output at the other (seen on a fresh
test stack, where every cluster starts counting at 1)."""

from __future__ import annotations

import uuid

import asyncssh

from gateway.clock import SystemClock
from gateway.connectors.base import SiteJobRequest, output_file
from gateway.connectors.slurm_openapi import V0038
from gateway.connectors.ssh import SshConnector, SshOptions
from gateway.secrets.fake import FakeSecretStore


def request(job_id: str) -> SiteJobRequest:
    return SiteJobRequest(
        job_id=job_id,
        account="alice",
        project_account="project_465000001",
        partition="small",
        name="t",
        script="#!/bin/bash\ntrue\n",
        nodes=1,
        cores=1,
        memory_gb=1,
        gpus=0,
        time_limit_minutes=5,
    )


def test_both_connectors_name_output_by_the_gateway_job_id() -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    rest = {j: V0038().submit_body(request(j), home="/home/alice")["job"] for j in (first, second)}
    host_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    ssh = SshConnector(
        "lucia",
        SshOptions(host="127.0.0.1", host_keys=[host_key], status_account="alice"),
        secrets=FakeSecretStore(),
        clock=SystemClock(),
    )
    argv = {j: ssh.sbatch_argv(request(j)) for j in (first, second)}
    for job_id in (first, second):
        out, err = output_file("/home/alice", job_id, "stdout"), output_file("/home/alice", job_id, "stderr")
        assert (out, err) == (f"/home/alice/antenna-{job_id}.out", f"/home/alice/antenna-{job_id}.err")
        assert (rest[job_id]["standard_output"], rest[job_id]["standard_error"]) == (out, err)
        assert {f"--output={out}", f"--error={err}"} <= set(argv[job_id])
    assert rest[first]["standard_output"] != rest[second]["standard_output"]

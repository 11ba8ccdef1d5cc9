"""Helpers for the stack's smoke tests: submitting as a test person and reading sacct."""

from __future__ import annotations

import time
from dataclasses import dataclass

from tests.stack.plugin import SlurmStack

WAIT = 60.0  # seconds a short job may take from submission to its accounting record


@dataclass(frozen=True)
class Accounted:
    job_id: str
    state: str
    user: str
    account: str
    partition: str
    elapsed_seconds: int
    alloc_tres: dict[str, str]


def submit(stack: SlurmStack, person: str, cluster: str, *args: str, input_text: str | None = None) -> str:
    """`sbatch --parsable` as the person on the cluster (script on stdin if given); the job id."""
    result = stack.run_as(person, cluster, ["sbatch", "--parsable", *args], input_text=input_text)
    assert result.returncode == 0, f"sbatch on {cluster} failed: {result.stderr}"
    return result.stdout.strip().split(";")[0]


def parse_tres(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(",") if "=" in item)


def accounted(stack: SlurmStack, cluster: str, job_id: str) -> Accounted | None:
    """The job's allocation record in sacct once it has ended and is complete, else None.

    slurmdbd applies a job's start and end messages asynchronously: for a short job, sacct can show
    COMPLETED before the start message has filled in the partition, so wait for that too.
    """
    result = stack.run(
        cluster,
        [
            "sacct",
            "--allusers",
            "--allocations",
            "--noheader",
            "--parsable2",
            f"--jobs={job_id}",
            "--format=JobID,State,User,Account,Partition,ElapsedRaw,AllocTRES",
        ],
    )
    assert result.returncode == 0, result.stderr
    for line in result.stdout.splitlines():
        job, state, user, account, partition, elapsed, tres = line.split("|")
        if job == job_id and partition and state not in {"PENDING", "RUNNING", "REQUEUED", "SUSPENDED"}:
            return Accounted(job, state, user, account, partition, int(elapsed), parse_tres(tres))
    return None


def wait_accounted(stack: SlurmStack, jobs: list[tuple[str, str]]) -> dict[tuple[str, str], Accounted]:
    """Wait for every job, given as (cluster, job id), to end and reach sacct."""
    found: dict[tuple[str, str], Accounted] = {}
    deadline = time.monotonic() + WAIT
    while len(found) < len(jobs) and time.monotonic() < deadline:
        for key in jobs:
            if key not in found and (record := accounted(stack, *key)):
                found[key] = record
        if len(found) < len(jobs):
            time.sleep(0.5)
    missing = [key for key in jobs if key not in found]
    assert not missing, f"jobs never reached sacct as ended within {WAIT:.0f} s: {missing}"
    return found

"""The three test clusters behave like the sites: real partition names, node shapes, jobs that run and
are accounted in sacct with their elapsed time and allocated TRES (GPUs included), associations enforced.

The GPUs are character devices standing in for MI250X/GH200/A100: Slurm schedules and binds them for real
(CUDA_VISIBLE_DEVICES), but no GPU code can run here.
"""

from __future__ import annotations

import re

import pytest

from tests.integration.stack.support import submit, wait_accounted
from tests.stack.plugin import SlurmStack

pytestmark = pytest.mark.integration

# The sites' own partition names (site-billing.md), not read back from the stack's description.
SITE_PARTITIONS = {
    "lumi": {"standard", "small", "debug", "standard-g", "small-g", "dev-g"},
    "jupiter": {"booster"},
    "lucia": {"batch", "debug", "gpu"},
}
# (node, cores, memory MB, GRES) of one node per node type.
NODE_SHAPES = {
    "lumi": [("nid001000", 128, 229376, "(null)"), ("nid005000", 56, 491520, "gpu:mi250:8")],
    "jupiter": [("jpbo-001-01", 288, 491520, "gpu:gh200:4")],
    "lucia": [("cns001", 128, 245760, "(null)"), ("cna001", 32, 245760, "gpu:a100:4")],
}
# "plnd": idle, held by the backfill scheduler for a pending job (Slurm 22.05), as a job left by an earlier
# test on an exclusive partition can make it: still a node that serves jobs
USABLE = {"idle", "mix", "alloc", "comp", "plnd"}


def test_each_cluster_serves_its_site_partitions_with_usable_nodes(slurm_stack: SlurmStack) -> None:
    assert {c.name for c in slurm_stack.clusters} == set(SITE_PARTITIONS)
    for name, partitions in SITE_PARTITIONS.items():
        result = slurm_stack.run(name, ["sinfo", "--noheader", "--format=%R|%a|%t|%D"])
        assert result.returncode == 0, result.stderr
        rows = [line.split("|") for line in result.stdout.splitlines()]
        assert {r[0] for r in rows} == partitions, f"{name}: {result.stdout}"
        for partition, avail, state, count in rows:
            assert avail == "up", f"{name}/{partition} is {avail}"
            assert state.rstrip("*~#") in USABLE, f"{name}/{partition}: {count} node(s) {state}"


def test_nodes_claim_the_real_node_shapes(slurm_stack: SlurmStack) -> None:
    for name, shapes in NODE_SHAPES.items():
        result = slurm_stack.run(name, ["sinfo", "--noheader", "--Node", "--format=%N|%c|%m|%G"])
        assert result.returncode == 0, result.stderr
        seen = {tuple(line.split("|")) for line in result.stdout.splitlines()}
        for node, cores, memory, gres in shapes:
            assert (node, str(cores), str(memory), gres) in seen, f"{name}: {result.stdout}"


def test_jobs_run_on_every_cluster_and_sacct_records_elapsed_and_allocated_tres(
    slurm_stack: SlurmStack,
) -> None:
    jobs = {
        # shared partition: exactly what was asked
        "lumi-small": ("alice", "lumi", ["-p", "small", "-n", "4", "--mem-per-cpu=1750"]),
        # shared GPU partition: GCDs as GRES
        "lumi-small-g": ("bob", "lumi", ["-p", "small-g", "-A", "project_465000002", "--gpus=2"]),
        # exclusive partition: the whole 128-core node whatever was asked
        "lumi-standard": ("alice", "lumi", ["-p", "standard", "-n", "1"]),
        # JUPITER: whole Booster nodes, 288 cores and 4 GH200
        "jupiter-booster": ("carol", "jupiter", ["-p", "booster", "-N", "1"]),
        "lucia-gpu": ("alice", "lucia", ["-p", "gpu", "--gpus=1", "-c", "8"]),
        "lucia-batch": ("bob", "lucia", ["-p", "batch", "-n", "2", "-A", "aifa002"]),
    }
    ids = {}
    for label, (person, cluster, args) in jobs.items():
        script = "#!/bin/bash\nsleep 2\necho gpus=${CUDA_VISIBLE_DEVICES:-none}\n"
        output = slurm_stack.person(person).home / f"stack-smoke-{label}-%j.out"
        job_id = submit(
            slurm_stack,
            person,
            cluster,
            *args,
            "-t",
            "5",
            "-J",
            f"smoke-{label}",
            "-o",
            str(output),
            input_text=script,
        )
        ids[label] = (cluster, job_id)

    records = wait_accounted(slurm_stack, list(ids.values()))
    got = {label: records[key] for label, key in ids.items()}

    for label, record in got.items():
        person, cluster, _ = jobs[label]
        assert record.state == "COMPLETED", f"{label}: {record}"
        assert record.user == person
        assert record.elapsed_seconds >= 1, f"{label}: elapsed {record.elapsed_seconds}"
        assert record.account in slurm_stack.person(person).accounts[cluster]
    assert got["lumi-small"].alloc_tres["cpu"] == "4"
    assert got["lumi-small"].alloc_tres["mem"] == "7000M"
    assert got["lumi-small"].account == "project_465000001"  # alice's default account
    assert got["lumi-small-g"].alloc_tres["gres/gpu"] == "2"
    assert got["lumi-small-g"].account == "project_465000002"
    assert got["lumi-standard"].alloc_tres["cpu"] == "128"
    assert got["jupiter-booster"].alloc_tres["cpu"] == "288"
    assert got["jupiter-booster"].alloc_tres["gres/gpu"] == "4"
    assert got["lucia-gpu"].alloc_tres["gres/gpu"] == "1"
    assert got["lucia-gpu"].alloc_tres["cpu"] == "8"
    assert "gres/gpu" not in got["lucia-batch"].alloc_tres
    assert got["lucia-batch"].partition == "batch"

    # The GPUs were bound to the job, as on a real GPU node.
    out = slurm_stack.person("bob").home / f"stack-smoke-lumi-small-g-{ids['lumi-small-g'][1]}.out"
    assert out.read_text().strip() == "gpus=0,1"


def test_a_person_without_an_association_is_refused(slurm_stack: SlurmStack) -> None:
    result = slurm_stack.run_as("dave", "lucia", ["sbatch", "-p", "batch", "--wrap", "true"])
    assert result.returncode != 0
    assert re.search(r"[Ii]nvalid account", result.stderr), result.stderr


def test_an_account_of_another_project_is_refused(slurm_stack: SlurmStack) -> None:
    result = slurm_stack.run_as("alice", "lumi", ["sbatch", "-p", "small", "-A", "project_465000002", "--wrap", "true"])
    assert result.returncode != 0
    assert re.search(r"[Ii]nvalid account", result.stderr), result.stderr

"""slurmrestd on the test clusters: JWT auth with each cluster's own key, job submission, accounting.

Tokens are minted here with PyJWT from the cluster's key file, as the gateway will mint them with the
key it holds in Vault.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest

from tests.integration.stack.support import WAIT
from tests.stack.plugin import SlurmStack, StackCluster

pytestmark = pytest.mark.integration

API = "/slurm/v0.0.38"
DB_API = "/slurmdb/v0.0.38"


def token(key: bytes, user: str, lifetime: int = 300) -> str:
    now = int(time.time())
    return jwt.encode({"sun": user, "iat": now, "exp": now + lifetime}, key, algorithm="HS256")


def client(cluster: StackCluster, user: str, key: bytes | None = None) -> httpx.Client:
    assert cluster.slurmrestd_url is not None, f"{cluster.name} runs no slurmrestd"
    signed = token(key if key is not None else cluster.jwt_key_bytes(), user)
    return httpx.Client(
        base_url=cluster.slurmrestd_url,
        headers={"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": signed},
        timeout=30,
    )


@pytest.mark.parametrize("name", ["lumi", "jupiter", "lucia"])
def test_ping_answers_a_token_signed_with_the_cluster_key(slurm_stack: SlurmStack, name: str) -> None:
    with client(slurm_stack.cluster(name), "alice") as http:
        response = http.get(f"{API}/ping")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["errors"] == []
    assert [p["ping"] for p in body["pings"]] == ["UP"]


def test_a_token_signed_with_another_key_is_refused(slurm_stack: SlurmStack) -> None:
    lumi, lucia = slurm_stack.cluster("lumi"), slurm_stack.cluster("lucia")
    # Lucia's key is a real cluster key, only not lumi's: each site trusts its own.
    with client(lumi, "alice", key=lucia.jwt_key_bytes()) as http:
        response = http.get(f"{API}/ping")
    assert response.status_code != 200
    assert "pings" not in response.json()
    assert response.json()["errors"], response.text


def test_an_expired_token_is_refused(slurm_stack: SlurmStack) -> None:
    lumi = slurm_stack.cluster("lumi")
    expired = token(lumi.jwt_key_bytes(), "alice", lifetime=-60)
    response = httpx.get(
        f"{lumi.slurmrestd_url}{API}/ping",
        headers={"X-SLURM-USER-NAME": "alice", "X-SLURM-USER-TOKEN": expired},
        timeout=30,
    )
    assert response.status_code != 200
    assert response.json()["errors"], response.text


def wait_job(http: httpx.Client, job_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while True:
        response = http.get(f"{API}/job/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()["jobs"][0]
        if job["job_state"] not in {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING"}:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['job_state']}"
        time.sleep(0.5)


@pytest.mark.parametrize(("name", "partition", "gpus"), [("lumi", "small-g", 2), ("lucia", "batch", 0)])
def test_submit_runs_the_job_as_the_token_user_and_accounts_it(
    slurm_stack: SlurmStack, name: str, partition: str, gpus: int
) -> None:
    cluster = slurm_stack.cluster(name)
    home = slurm_stack.person("alice").home
    job: dict[str, Any] = {
        "name": f"rest-smoke-{name}",
        "partition": partition,
        "time_limit": 5,
        "current_working_directory": str(home),
        "environment": {"PATH": "/usr/bin:/bin", "SMOKE": "from-rest"},
        "standard_output": str(home / f"rest-smoke-{name}-%j.out"),
    }
    if gpus:
        job["gpus"] = str(gpus)
    script = '#!/bin/bash\nsleep 1\necho "$SMOKE $(id -un) ${CUDA_VISIBLE_DEVICES:-none}"\n'
    with client(cluster, "alice") as http:
        response = http.post(f"{API}/job/submit", json={"script": script, "job": job})
        assert response.status_code == 200, response.text
        job_id = response.json()["job_id"]
        finished = wait_job(http, job_id)
    assert finished["job_state"] == "COMPLETED", finished
    assert finished["user_name"] == "alice"
    assert finished["account"] == slurm_stack.person("alice").accounts[name][0]
    expected_gpus = ",".join(str(i) for i in range(gpus)) if gpus else "none"
    output = (home / f"rest-smoke-{name}-{job_id}.out").read_text().strip()
    assert output == f"from-rest alice {expected_gpus}"

    # The accounting side of slurmrestd (slurmdbd) has the job with its allocation.
    with client(cluster, "alice") as http:
        deadline = time.monotonic() + WAIT
        while True:
            response = http.get(f"{DB_API}/job/{job_id}")
            assert response.status_code == 200, response.text
            jobs = response.json()["jobs"]
            if jobs and jobs[0]["state"]["current"] == "COMPLETED":
                break
            assert time.monotonic() < deadline, f"job {job_id} not in slurmdbd as completed"
            time.sleep(0.5)
    allocated = {t["type"] + (f"/{t['name']}" if t["name"] else ""): t["count"] for t in jobs[0]["tres"]["allocated"]}
    assert allocated["cpu"] >= 1
    if gpus:
        assert allocated["gres/gpu"] == gpus
    else:
        assert "gres/gpu" not in allocated
    assert jobs[0]["time"]["elapsed"] >= 1

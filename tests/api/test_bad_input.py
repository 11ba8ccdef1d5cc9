"""Bad input gets a clear answer and loses nothing: each refusal is a 4xx problem naming the field, and the
job table, the ledger's entries and the project's balances are exactly as before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.api.harness import ALICE, BOB, NOMAD, OSCAR, Gateway, job_body, open_gateway
from tests.support.idp import LoopbackIdP

pytestmark = pytest.mark.anyio
PROBLEMS = "https://antenna.example/problems/"
SCRIPT_LIMIT = 256 * 1024  # the default limits.script_max_bytes
REQUEST_LIMIT = 512 * 1024  # the default limits.request_max_bytes


@dataclass(frozen=True)
class Bad:
    status: int
    slug: str
    field: str
    body: dict[str, Any] | None = None  # a job spec; None with ``raw``
    raw: bytes | None = None
    person: str = ALICE
    headers: dict[str, str] = field(default_factory=dict)
    mentions: str = ""  # a word the detail must contain (besides the field)


CASES: dict[str, Bad] = {
    "malformed-json": Bad(400, "invalid-request", "body", raw=b'{"project": "demo", "site": '),
    "not-an-object": Bad(422, "invalid-job", "body", raw=b'["demo"]'),
    "unknown-field": Bad(422, "invalid-job", "queue", job_body(queue="debug")),
    # Nothing in the spec may choose the Slurm account, user, QoS or reservation: the gateway sets those.
    "chooses-the-account": Bad(422, "invalid-job", "account", job_body(account="project_465000001")),
    "chooses-the-qos": Bad(422, "invalid-job", "qos", job_body(qos="high")),
    "chooses-the-reservation": Bad(422, "invalid-job", "reservation", job_body(reservation="maint")),
    "chooses-the-user": Bad(422, "invalid-job", "user", job_body(user="root")),
    "missing-time-limit": Bad(422, "invalid-job", "time_limit", job_body(time_limit=None)),
    # #SBATCH lines (issue 14 item 1): what the gateway owns, arrays and anything unpriced are refused, naming
    # the directive; a directive that contradicts the request names both.
    **{
        f"sbatch-{name}": Bad(
            422, "invalid-job", field, job_body(script=f"#!/bin/bash\n#SBATCH {line}\nhostname\n"), mentions=word
        )
        for name, field, line, word in [
            ("account", "script", "-A project_465000002", "-A project_465000002"),
            ("qos", "script", "--qos=high", "--qos=high"),
            ("reservation", "script", "--reservation maint", "--reservation maint"),
            ("output", "script", "--output=/tmp/x", "--output"),
            ("export", "script", "--export=ALL", "--export"),
            ("array", "script", "--array=0-999", "arrays are not supported"),
            ("exclusive", "script", "--exclusive", "--exclusive"),
            ("gres-not-gpu", "script", "--gres=nvme:100", "only GPUs"),
            ("unknown-option", "script", "--constraint=mi250", "--constraint"),
            ("other-partition", "partition", "-p gpu", "-p gpu"),
            ("conflicting-time", "time_limit", "--time=00:20:00", "--time=00:20:00"),
            ("node-range", "script", "--nodes=1-4", "whole number"),
        ]
    },
    # Lines sbatch reads that a reader of #SBATCH alone would miss, or read otherwise (review of item 1).
    **{
        f"sbatch-{name}": Bad(
            422, "invalid-job", "script", job_body(script=f"#!/bin/bash\n{lines}\nhostname\n"), mentions=word
        )
        for name, lines, word in [
            ("slurm-magic", "#SLURM --array=0-9", "arrays are not supported"),
            ("pbs-directive", "#PBS -t 0-99", "#PBS"),
            ("single-quotes", "#SBATCH --mail-user=a' --array=0-99 --mail-user='b", "double quotes"),
            ("carriage-return", "# x\rfoo\n#SBATCH --array=0-9", "arrays are not supported"),
            ("hetjob", "#SBATCH --mail-user=hetjob@x", "one job per script"),
            ("two-gpu-ways", "#SBATCH --gpus=1 --gpus-per-node=8", "one way only"),
            ("memory-zero", "#SBATCH --mem=0", "--mem=0"),
        ]
    },
    "sbatch-conflicting-nodes": Bad(
        422,
        "invalid-job",
        "nodes",
        job_body(nodes=1, script="#!/bin/bash\n#SBATCH -N 2\nhostname\n"),
        mentions="-N 2 conflicts with nodes=1",
    ),
    "sbatch-bad-time": Bad(
        422,
        "invalid-job",
        "time_limit",
        job_body(time_limit=None, script="#!/bin/bash\n#SBATCH --time=soon\nhostname\n"),
        mentions="--time=soon",
    ),
    "script-over-the-size-limit": Bad(
        413, "payload-too-large", "script", job_body(script="#!/bin/bash\n" + "#" * SCRIPT_LIMIT), mentions="limit"
    ),
    "script-without-interpreter-line": Bad(422, "invalid-job", "script", job_body(script="echo hi\n")),
    "time-limit-over-the-partitions-maximum": Bad(
        422, "invalid-job", "time_limit", job_body(time_limit="02:00:00"), mentions="60"
    ),
    "time-limit-unparsable": Bad(422, "invalid-job", "time_limit", job_body(time_limit="an hour")),
    "time-limit-zero": Bad(422, "invalid-job", "time_limit", job_body(time_limit=0)),
    "partition-that-does-not-exist": Bad(
        422, "invalid-job", "partition", job_body(partition="huge-g"), mentions="huge-g"
    ),
    "site-that-does-not-exist": Bad(422, "invalid-job", "site", job_body(site="atlantis"), mentions="atlantis"),
    "gpus-on-a-cpu-partition": Bad(422, "invalid-job", "gpus", job_body(gpus=1), mentions="no GPUs"),
    "more-gpus-than-a-node-has": Bad(422, "invalid-job", "gpus", job_body(partition="small-g", gpus=9)),
    "more-nodes-than-the-partition-allows": Bad(422, "invalid-job", "nodes", job_body(nodes=2)),
    "more-cores-than-a-node-has": Bad(422, "invalid-job", "cores", job_body(cores=129)),
    "more-memory-than-a-node-has": Bad(422, "invalid-job", "memory_gb", job_body(memory_gb=257)),
    "environment-variable-outside-the-allow-list": Bad(
        422, "invalid-job", "environment.LD_PRELOAD", job_body(environment={"LD_PRELOAD": "/tmp/x.so"})
    ),
    "environment-variable-with-an-invalid-name": Bad(
        422, "invalid-job", "environment", job_body(environment={"BAD NAME": "1"})
    ),
    "absolute-working-directory": Bad(422, "invalid-job", "working_directory", job_body(working_directory="/etc")),
    "working-directory-climbing-out": Bad(
        422, "invalid-job", "working_directory", job_body(working_directory="runs/../../other-project")
    ),
    "working-directory-dotdot": Bad(422, "invalid-job", "working_directory", job_body(working_directory="..")),
    "quota-exceeded": Bad(
        403, "quota-exceeded", "", job_body(cores=128, time_limit=60), mentions="128"
    ),  # 128 core-hours > 100 granted
    "no-account-mapping-at-the-site": Bad(403, "forbidden", "", job_body(), person=NOMAD, mentions="local"),
    "not-a-member-of-the-project": Bad(403, "forbidden", "", job_body(), person=OSCAR, mentions="demo"),
    "idempotency-key-with-spaces": Bad(
        422, "invalid-job", "Idempotency-Key", job_body(), headers={"Idempotency-Key": "a key"}
    ),
}


async def _send(gw: Gateway, case: Bad) -> Any:
    headers = {**gw.auth(case.person), **case.headers}
    if case.raw is not None:
        return await gw.client.post(
            "/v1/jobs", content=case.raw, headers={**headers, "Content-Type": "application/json"}
        )
    return await gw.client.post("/v1/jobs", json=case.body, headers=headers)


@pytest.mark.parametrize("name", list(CASES))
async def test_bad_submission_is_refused_naming_the_field_and_loses_nothing(gw: Gateway, name: str) -> None:
    case = CASES[name]
    before = await gw.ledger_state()
    r = await _send(gw, case)
    assert r.status_code == case.status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == PROBLEMS + case.slug
    assert problem["status"] == case.status
    if case.field:
        assert problem["field"] == case.field
        assert case.field.split(".")[0] in problem["detail"] or case.field == "body"
    assert case.mentions in problem["detail"]
    assert await gw.ledger_state() == before


async def test_quota_exceeded_tells_the_available_amount_and_the_price(gw: Gateway) -> None:
    await gw.submit(ALICE, time_limit=60, cores=64)  # 64 of 100 core-hours reserved
    before = await gw.ledger_state()
    r = await gw.client.post("/v1/jobs", json=job_body(cores=40, time_limit=60), headers=gw.auth(ALICE))
    assert r.status_code == 403
    problem = r.json()
    assert problem["type"] == PROBLEMS + "quota-exceeded"
    assert (problem["available"], problem["price"], problem["unit"]) == ("36.000000", "40.000000", "cpu-core-hours")
    assert await gw.ledger_state() == before
    fits = await gw.client.post("/v1/jobs", json=job_body(cores=36, time_limit=60), headers=gw.auth(ALICE))
    assert fits.status_code == 202  # exactly what is available still fits


async def test_a_body_over_the_request_limit_is_refused_before_it_is_read(gw: Gateway) -> None:
    before = await gw.ledger_state()
    body = b'{"script": "' + b"x" * REQUEST_LIMIT + b'"}'
    r = await gw.client.post("/v1/jobs", content=body, headers={**gw.auth(ALICE), "Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["type"] == PROBLEMS + "payload-too-large"
    assert await gw.ledger_state() == before


async def test_a_chunked_body_over_the_request_limit_is_refused_too(gw: Gateway) -> None:
    before = await gw.ledger_state()

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the size is known only while reading
        yield b'{"project": "demo", "script": "'
        for _ in range(REQUEST_LIMIT // 65536 + 1):
            yield b"x" * 65536
        yield b'"}'

    r = await gw.client.post(
        "/v1/jobs", content=chunks(), headers={**gw.auth(ALICE), "Content-Type": "application/json"}
    )
    assert "content-length" not in r.request.headers
    assert r.status_code == 413
    assert r.json()["type"] == PROBLEMS + "payload-too-large"
    assert await gw.ledger_state() == before


async def test_submissions_over_the_rate_limit_get_429_with_retry_after(tmp_path: Path, test_idp: LoopbackIdP) -> None:
    async with open_gateway(tmp_path, test_idp, limits={"submissions_per_minute": 2}) as gw:
        await gw.submit(ALICE)
        await gw.submit(ALICE)
        before = await gw.ledger_state()
        r = await gw.client.post("/v1/jobs", json=job_body(), headers=gw.auth(ALICE))
        assert r.status_code == 429
        assert r.json()["type"] == PROBLEMS + "rate-limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert await gw.ledger_state() == before
        # The limit is per person: another member of the project is not held back by ALICE's burst.
        assert (await gw.submit(BOB))["state"] == "accepted"


async def test_too_many_active_jobs_per_person_is_429(tmp_path: Path, test_idp: LoopbackIdP) -> None:
    async with open_gateway(tmp_path, test_idp, limits={"max_active_jobs_per_person": 1}) as gw:
        await gw.submit(ALICE)
        before = await gw.ledger_state()
        r = await gw.client.post("/v1/jobs", json=job_body(), headers=gw.auth(ALICE))
        assert r.status_code == 429
        assert "Retry-After" in r.headers
        assert await gw.ledger_state() == before

"""Rate limits shared by replicas through the machine's real Redis (127.0.0.1:6379), and what happens when
Redis is unreachable: the limits are for fairness, so submissions go on (the ledger guards allocations).

Each test namespaces its counters (``limits.storage_key_prefix``) so runs never see each other's.
"""

from __future__ import annotations

import logging
import socket
import uuid
from pathlib import Path

import pytest
import redis

from tests.api.harness import ALICE, BOB, job_body, open_gateway
from tests.support.idp import LoopbackIdP

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
REDIS = "redis://127.0.0.1:6379/0"
PROBLEMS = "https://antenna.example/problems/"


@pytest.fixture
def key_prefix() -> str:
    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"the machine's Redis at {REDIS} does not answer: {exc}")
    return f"antenna-test-{uuid.uuid4().hex[:12]}"


async def test_two_replicas_share_one_persons_submission_budget(
    tmp_path: Path, test_idp: LoopbackIdP, pg_url: str, key_prefix: str
) -> None:
    limits = {"submissions_per_minute": 2, "storage_uri": REDIS, "storage_key_prefix": key_prefix}
    async with (
        open_gateway(tmp_path / "a", test_idp, database_url=pg_url, limits=limits) as first,
        open_gateway(tmp_path / "b", test_idp, database_url=pg_url, limits=limits, seed=False) as second,
    ):
        await first.submit(ALICE)
        await second.submit(ALICE)
        before = await first.ledger_state()
        refused = await first.client.post("/v1/jobs", json=job_body(), headers=first.auth(ALICE))
        assert refused.status_code == 429, refused.text
        assert refused.json()["type"] == PROBLEMS + "rate-limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert await first.ledger_state() == before
        assert (await second.submit(BOB))["state"] == "accepted"  # per person, on every replica
    keys = redis.Redis.from_url(REDIS).keys(f"{key_prefix}*")
    assert keys, "the counters were not kept in Redis"


async def test_redis_unreachable_lets_submissions_through_and_says_so(
    tmp_path: Path, test_idp: LoopbackIdP, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    limits = {"submissions_per_minute": 1, "storage_uri": f"redis://127.0.0.1:{port}/0"}
    caplog.set_level(logging.WARNING, logger="antenna")
    async with open_gateway(tmp_path, test_idp, limits=limits) as gw:
        first = await gw.submit(ALICE)
        second = await gw.submit(ALICE)  # over the limit, but the limit cannot be counted
        assert (first["state"], second["state"]) == ("accepted", "accepted")
    warnings = [r for r in caplog.records if "rate-limit storage unavailable" in r.getMessage()]
    assert len(warnings) == 1  # once a minute, not once a request

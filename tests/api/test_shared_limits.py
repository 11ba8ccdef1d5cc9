"""Rate limits shared by replicas through the machine's real Redis (127.0.0.1:6379), and what happens when
Redis is unreachable: the limits are for fairness, so submissions go on (the ledger guards allocations).

Each test namespaces its counters (``limits.storage_key_prefix``) so runs never see each other's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
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


class _HeldRedis:
    """A TCP proxy to the machine's Redis, in its own thread. Once ``holding`` is set it holds every byte from
    the gateway until released: the gateway has asked Redis and hears nothing back."""

    def __init__(self) -> None:
        self.holding = False
        self.received = threading.Event()  # the gateway has sent something while holding
        self._loop = asyncio.new_event_loop()
        self._release = asyncio.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def __enter__(self) -> _HeldRedis:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def release(self) -> None:
        self._loop.call_soon_threadsafe(self._release.set)

    def __exit__(self, *_: object) -> None:
        self.release()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, hold: bool) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65536):
                    if hold and self.holding:
                        self.received.set()
                        await self._release.wait()
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))


async def test_item10_a_request_waiting_on_redis_holds_no_other_request(
    tmp_path: Path, test_idp: LoopbackIdP, key_prefix: str
) -> None:
    with _HeldRedis() as held:
        limits = {
            "storage_uri": f"redis://127.0.0.1:{held.port}/0",
            "storage_key_prefix": key_prefix,
            "storage_timeout_seconds": 10,
        }
        async with open_gateway(tmp_path, test_idp, limits=limits) as gw:
            held.holding = True
            waiting = asyncio.create_task(gw.client.get("/v1/me", headers=gw.auth(ALICE)))
            for _ in range(600):  # bounded: until the first request's count has reached Redis
                if held.received.is_set():
                    break
                await asyncio.sleep(0.05)
            assert held.received.is_set()
            # Redis has the first request's count and answers nothing: other requests are served meanwhile.
            assert (await gw.client.get("/readyz")).status_code == 200
            assert (await gw.client.get("/healthz")).status_code == 200
            assert not waiting.done()
            held.release()
            assert (await waiting).status_code == 200

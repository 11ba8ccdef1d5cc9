"""Structured logs of a whole run (submit, run, cancel, refusals): one JSON object per line, each request's
lines tied to it by its request id, job events carrying the job, project and person; and no token used in
the run, nor any script body, in any line.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.logs import configure_logging
from gateway.settings import LoggingSettings
from tests.api.harness import ALICE, BOB, OSCAR, PAT, Gateway, job_body

pytestmark = pytest.mark.anyio
SCRIPT_MARKER = "echo 5f2c1d-only-in-the-script-body"


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    configure_logging(LoggingSettings(level="INFO", json=True), stream=stream)
    try:
        yield stream
    finally:
        root.handlers, root.level = saved[0], saved[1]


async def test_a_whole_run_logs_json_lines_with_request_ids_and_no_secrets(
    gw: Gateway, log_stream: io.StringIO
) -> None:
    tokens: list[str] = []
    request_ids: set[str] = set()

    async def remember(response: httpx.Response) -> None:
        request_ids.add(response.headers["X-Request-Id"])

    async def note_token(request: httpx.Request) -> None:
        _, _, token = request.headers.get("Authorization", "").partition(" ")
        if token:
            tokens.append(token)

    # Every request of the run, the harness's own (seeding, polling) too.
    gw.client.event_hooks["request"].append(note_token)
    gw.client.event_hooks["response"].append(remember)

    async def call(method: str, path: str, token: str | None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await gw.client.request(method, path, headers=headers, **kwargs)

    script = f"#!/bin/bash\n{SCRIPT_MARKER}\nsleep 1.2\n"
    submitted = await call("POST", "/v1/jobs", gw.token(ALICE), json=job_body(script=script))
    assert submitted.status_code == 202
    job_id = submitted.json()["id"]
    await gw.drive_until(job_id, {"completed"})
    other = await call("POST", "/v1/jobs", gw.token(BOB), json=job_body(script=script))
    assert (await call("DELETE", f"/v1/jobs/{other.json()['id']}", gw.token(PAT))).status_code == 202
    assert (await call("GET", f"/v1/jobs/{job_id}", gw.token(OSCAR))).status_code == 404
    expired = gw.token(ALICE, iat=1_600_000_000, exp=1_600_000_300)
    assert (await call("GET", "/v1/me", expired)).status_code == 401
    forged = gw.token(ALICE, groups=["/projects/demo/pi"])[:-8] + "AAAAAAAA"
    assert (await call("GET", "/v1/me", forged)).status_code == 401
    assert (await call("POST", "/v1/jobs", gw.token(ALICE), json=job_body(script=script, gpus=1))).status_code == 422

    text = log_stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert lines
    for line in lines:
        assert {"event", "level", "timestamp", "logger"} <= set(line), line

    api_lines = [line for line in lines if line["logger"] == "antenna.api"]
    assert all(line.get("request_id") in request_ids for line in api_lines), api_lines
    request_lines = [line for line in api_lines if line["event"] == "request"]
    assert {line["request_id"] for line in request_lines} == request_ids  # each request logged, with its id
    assert any(line["person"] == ALICE and line["status"] == 202 for line in request_lines)

    events = {line["event"] for line in lines}
    assert {"job submission accepted", "job cancel requested", "job state changed", "token refused"} <= events
    accepted = next(line for line in lines if line["event"] == "job submission accepted")
    assert (accepted["job_id"], accepted["project"], accepted["person"]) == (job_id, "demo", ALICE)
    assert {line["state"] for line in lines if line["event"] == "job state changed" and line["job_id"] == job_id} >= {
        "submitted",
        "completed",
    }
    refusals = [line for line in lines if line["event"] == "token refused"]
    assert {line["reason"] for line in refusals} == {"expired", "bad_signature"}

    assert len(tokens) > 10
    for token in tokens:
        for part in (token, *token.split(".")):
            assert part not in text, "a token (or one of its parts) is in the logs"
    assert "5f2c1d-only-in-the-script-body" not in text
    assert "Bearer" not in text

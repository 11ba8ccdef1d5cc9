"""Classification by the site's own words (issue item 6): slurmrestd v0.0.38 answers Slurm's refusals and its
own failures alike with HTTP 500 and a message in ``errors[]``. Replies recorded from the real v0.0.38 stack
(tests/connectors/recorded/slurmrestd-v0.0.38-errors.json: `tests/stack/stack up`, then the requests named
by each key) are replayed to the real connector through httpx's MockTransport."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.clock import SystemClock
from gateway.connectors.base import SiteJobRequest
from gateway.connectors.slurmrestd import SlurmrestdConnector, SlurmrestdOptions
from gateway.errors import SiteRejected, SiteUnavailable
from gateway.secrets.fake import FakeSecretStore

pytestmark = pytest.mark.anyio
RECORDED = json.loads((Path(__file__).parent / "recorded" / "slurmrestd-v0.0.38-errors.json").read_text())
LIVE_EMPTY = {"jobs": [], "errors": []}
REQUEST = SiteJobRequest(
    job_id="00000000-0000-4000-8000-000000000000",
    account="alice",
    project_account="project_465000002",
    partition="small",
    name="recorded",
    script="#!/bin/bash\ntrue\n",
    nodes=1,
    cores=1,
    memory_gb=2,
    gpus=0,
    time_limit_minutes=5,
)


def connector(answer: dict[str, tuple[int, Any]]) -> SlurmrestdConnector:
    """The connector against a site that answers each path (without its query) with a recorded reply."""

    def reply(request: httpx.Request) -> httpx.Response:
        status, body = answer[request.url.path]
        return httpx.Response(status, json=body)

    secrets = FakeSecretStore()
    secrets.put_site_credentials("lumi", {"jwt_key": "raw:recorded-key-recorded-key-recorded-key"})
    options = SlurmrestdOptions(url="http://lumi.test", status_account="slurm")
    http = httpx.AsyncClient(base_url=options.url, transport=httpx.MockTransport(reply))
    return SlurmrestdConnector("lumi", options, secrets=secrets, clock=SystemClock(), http=http)


def recorded(name: str) -> tuple[int, Any]:
    return RECORDED[name]["status"], RECORDED[name]["body"]


async def test_item6_a_500_the_connector_does_not_recognise_is_unavailable_never_a_refusal() -> None:
    # find's fallback on accounting, answered as v0.0.38 answers a query it will not take.
    site = connector(
        {"/slurm/v0.0.38/jobs": (200, LIVE_EMPTY), "/slurmdb/v0.0.38/jobs": recorded("accounting_query_refused")}
    )
    with pytest.raises(SiteUnavailable) as caught:
        await site.find(account="alice", job_id=REQUEST.job_id)
    assert not isinstance(caught.value, SiteRejected)
    assert "Query empty or not RFC7320 compliant" in caught.value.detail


async def test_item6_slurm_s_own_refusal_in_a_500_stays_a_refusal() -> None:
    site = connector({"/slurm/v0.0.38/job/submit": recorded("submit_invalid_account")})
    with pytest.raises(SiteRejected, match="Invalid account"):
        await site.submit(REQUEST)


async def test_item6_nothing_found_in_accounting_is_not_at_the_site() -> None:
    site = connector(
        {"/slurm/v0.0.38/jobs": (200, LIVE_EMPTY), "/slurmdb/v0.0.38/jobs": recorded("accounting_nothing_found")}
    )
    assert await site.find(account="alice", job_id=REQUEST.job_id) is None

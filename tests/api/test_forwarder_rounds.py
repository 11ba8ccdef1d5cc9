"""How often a running forwarder goes to the database: once it has found everything due, a delivery's end
records its outcome without looking for work again, until something may have made work due (a submission
in this process, a notification from another, the poll). On the embedded SQLite: no notifications, so what
wakes the forwarder here is the submit route or the poll alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from gateway.jobs.forwarder import Forwarder
from gateway.jobs.spec import JobSpec
from tests.api.harness import ALICE, Gateway, job_body, open_gateway
from tests.support.idp import LoopbackIdP

pytestmark = pytest.mark.anyio
SLEEPER = "#!/bin/bash\nsleep 30\n"


@asynccontextmanager
async def forwarding(gw: Gateway) -> AsyncIterator[list[int]]:
    """Run the gateway's forwarder; yields the number of entries each of its claims returned, from after
    its look at start."""
    forwarder: Forwarder = gw.rt.forwarder
    claims: list[int] = []
    claim = forwarder._claim

    def counted(session: Any, capacity: Any, deadline: float) -> Any:
        found = claim(session, capacity, deadline)
        claims.append(len(found))
        return found

    forwarder._claim = counted  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(forwarder.run_forever(stop))
    try:
        for _ in range(1000):  # bounded: its first look at the outbox, at start, found nothing
            if claims:
                break
            await anyio.sleep(0.01)
        assert claims, "the forwarder never looked at the outbox"
        assert not any(claims)  # nothing was queued yet
        claims.clear()
        yield claims
    finally:
        stop.set()
        await task


async def delivered(gw: Gateway, job_id: str) -> dict[str, Any]:
    for _ in range(400):  # bounded rounds, not a timed assertion
        shown = await gw.job(job_id)
        if shown["site_job_id"] is not None:
            return shown
        await anyio.sleep(0.05)
    raise AssertionError(f"job {job_id} was never delivered")


async def test_a_delivery_is_recorded_without_looking_for_work_again(tmp_path: Path, test_idp: LoopbackIdP) -> None:
    async with (
        open_gateway(tmp_path, test_idp, forwarder={"enabled": True, "poll_seconds": 3600}) as gw,
        forwarding(gw) as claims,
    ):
        await delivered(gw, (await gw.submit(ALICE, script=SLEEPER))["id"])
        assert claims == [1]  # the submit route's wake found the job; its delivery's end looked for nothing

        await delivered(gw, (await gw.submit(ALICE, script=SLEEPER))["id"])  # a wake still looks again
        assert claims == [1, 1]


async def test_the_poll_still_finds_work_that_no_one_announced(tmp_path: Path, test_idp: LoopbackIdP) -> None:
    """An entry another replica's forwarder left behind (its lease ran out, its backoff ended) wakes no one."""
    async with (
        open_gateway(tmp_path, test_idp, forwarder={"enabled": True, "poll_seconds": 0.05}) as gw,
        forwarding(gw) as claims,
    ):
        await delivered(gw, (await gw.submit(ALICE, script=SLEEPER))["id"])
        principal = await gw.rt.verifier.verify(gw.token(ALICE))
        spec = JobSpec.model_validate(job_body(script=SLEEPER))
        quiet = gw.rt.jobs.submit(principal, spec, idempotency_key=None)  # not through the route: nobody is woken
        await delivered(gw, quiet.job.id)
        assert sum(claims) == 2

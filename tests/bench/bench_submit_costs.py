"""Where a submission's CPU goes: each piece of the gateway's submit path timed alone, one call after another
(no concurrency, so no lock or GIL contention is measured, only work), on the test stack's PostgreSQL.

Not a test (pytest does not collect ``bench_*.py``); run it by hand, with the stack up (it starts it if not):

    uv run python tests/bench/bench_submit_costs.py [--calls 300]

It prints one line per piece: CPU time of this process per call, and wall time per call; and first the SQL
statements one submission sends to PostgreSQL (each a round trip).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event, update

from gateway.identity import Principal
from gateway.jobs.forwarder import Claim
from gateway.jobs.models import OutboxEntry
from gateway.jobs.spec import JobSpec
from tests.bench.bench_forwarding import SCRIPT
from tests.faults.stackgw import ALICE, PROJECT, StackGateway, stack_gateway, stack_sites
from tests.stack.plugin import start_stack
from tests.support.db import drop_pg_schema, new_pg_schema, pg_schema_url
from tests.support.idp import LoopbackIdP


async def timed(label: str, calls: int, call: Callable[[], Awaitable[Any] | Any]) -> str:
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        result = call()
        if asyncio.iscoroutine(result):
            await result
    cpu_ms = (time.process_time() - cpu) * 1000 / calls
    wall_ms = (time.perf_counter() - wall) * 1000 / calls
    return f"| {label} | {cpu_ms:.2f} | {wall_ms:.2f} |"


async def forwarder_pieces(gw: StackGateway, calls: int, spec: JobSpec, principal: Principal) -> list[str]:
    """The forwarder's two transactions per job, timed alone: claiming one queued entry (lease it, read its
    job) and recording one delivery (the site's job id, the job's new state); no site is called."""
    forwarder, db = gw.rt.forwarder, gw.rt.db
    db.run(lambda s: s.execute(update(OutboxEntry).values(done_at=gw.rt.clock.now())))  # the earlier pieces' jobs
    for _ in range(calls + 1):
        gw.rt.jobs.submit(principal, spec, idempotency_key=None)
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(" ".join(statement.split()[:2]))

    event.listen(db.engine, "before_cursor_execute", record)
    db.run(lambda s: forwarder._claim(s, {"lumi": 1}, float("inf")))
    event.remove(db.engine, "before_cursor_execute", record)
    claims: list[Claim] = []
    rows = [
        await timed(
            "forwarder: claim one entry",
            calls,
            lambda: claims.extend(db.run(lambda s: forwarder._claim(s, {"lumi": 1}, float("inf")))),
        ),
        await timed(
            "forwarder: record one delivery",
            calls,
            lambda: db.run(
                lambda s: forwarder._write(
                    s, [functools.partial(forwarder._finish, claim=claims.pop(), site_job_id="1")], None
                )
            ),
        ),
    ]
    return [
        *rows,
        "",
        f"statements one claim sends, besides the pool's pre-ping and the COMMIT: {len(sent)} ({'; '.join(sent)})",
    ]


async def run(calls: int) -> list[str]:
    stack = start_stack()
    idp = LoopbackIdP().start()
    schema = new_pg_schema()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sites = stack_sites(stack)
            async with stack_gateway(
                stack,
                idp,
                Path(tmp),
                sites={"lumi": sites["lumi"]},
                database_url=pg_schema_url(schema),
                limits={"max_active_jobs_per_person": 1_000_000},
            ) as gw:
                headers = gw.auth(ALICE)
                token = headers["Authorization"].split()[1]
                principal = await gw.rt.verifier.verify(token)
                body = {
                    "project": PROJECT,
                    "name": "bench",
                    "time_limit": 5,
                    "site": "lumi",
                    "partition": "small",
                    "cores": 1,
                    "memory_gb": 2,
                    "script": SCRIPT,
                }
                spec = JobSpec.model_validate(body)
                # Warm caches (compiled SQL, the key set, the pool) before measuring.
                for _ in range(20):
                    await gw.client.post("/v1/jobs", json=body, headers=headers)
                sent: list[str] = []

                def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
                    sent.append(" ".join(statement.split()[:3]))

                event.listen(gw.rt.db.engine, "before_cursor_execute", record)
                gw.rt.jobs.submit(principal, spec, idempotency_key=None)
                event.remove(gw.rt.db.engine, "before_cursor_execute", record)
                return [
                    f"statements one JobService.submit sends, besides the pool's pre-ping and the COMMIT: "
                    f"{len(sent)} ({'; '.join(sent)})",
                    "",
                    "| piece | CPU ms per call | wall ms per call |",
                    "|---|---:|---:|",
                    await timed("bench client: mint an RS256 token (IdP work)", calls, lambda: gw.auth(ALICE)),
                    await timed("verify a token", calls, lambda: gw.rt.verifier.verify(token)),
                    await timed("JobSpec validation", calls, lambda: JobSpec.model_validate(body)),
                    await timed(
                        "JobService.submit (price, reserve, job, outbox, commit)",
                        calls,
                        lambda: gw.rt.jobs.submit(principal, spec, idempotency_key=None),
                    ),
                    await timed(
                        "POST /v1/jobs over in-process ASGI (client + API + the above)",
                        calls,
                        lambda: gw.client.post("/v1/jobs", json=body, headers=headers),
                    ),
                    await timed("GET /healthz, in-process ASGI", calls, lambda: gw.client.get("/healthz")),
                    *await forwarder_pieces(gw, calls, spec, principal),
                ]
    finally:
        idp.close()
        drop_pg_schema(schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    print("\n".join(asyncio.run(run(args.calls))))


if __name__ == "__main__":
    main()

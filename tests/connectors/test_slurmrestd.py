"""The slurmrestd connector against the real `lumi` cluster of the test stack (Slurm 22.05, OpenAPI v0.0.38).

Each test asserts what a person or operator would see: a job that runs, its state, the resources Slurm
allocated, a clear refusal for a bad partition or bad credentials, and `site-unavailable` when the daemon
is not there. Nothing here is mocked.
"""

from __future__ import annotations

import asyncio
import base64
import uuid

import pytest

from gateway.clock import SystemClock
from gateway.connectors.base import SiteJobRequest, SiteState
from gateway.connectors.slurmrestd import SlurmrestdConnector, SlurmrestdOptions
from gateway.errors import SiteAuthFailed, SiteInvalidJob, SiteUnavailable
from gateway.secrets.fake import FakeSecretStore
from tests.stack.plugin import SlurmStack

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def connector(
    stack: SlurmStack, *, key: bytes | None = None, url: str | None = None, stored: str | None = None
) -> SlurmrestdConnector:
    """``stored`` is the key exactly as the secrets store holds it (default: the cluster key in base64)."""
    lumi = stack.cluster("lumi")
    secrets = FakeSecretStore()
    secrets.put_site_credentials("lumi", {"jwt_key": stored or base64.b64encode(key or lumi.jwt_key_bytes()).decode()})
    options = SlurmrestdOptions(url=url or str(lumi.slurmrestd_url), status_account="alice")
    return SlurmrestdConnector("lumi", options, secrets=secrets, clock=SystemClock())


def request(**overrides: object) -> SiteJobRequest:
    values: dict[str, object] = {
        "job_id": str(uuid.uuid4()),
        "account": "alice",
        "project_account": "project_465000001",
        "partition": "small",
        "name": "t",
        "script": "#!/bin/bash\necho hello\nsleep 1\n",
        "nodes": 1,
        "cores": 2,
        "memory_gb": 2,
        "gpus": 0,
        "time_limit_minutes": 5,
    }
    values.update(overrides)
    return SiteJobRequest(**values)  # type: ignore[arg-type]


async def wait_final(conn: SlurmrestdConnector, site_job_id: str) -> SiteState:
    for _ in range(120):
        status = (await conn.statuses([site_job_id])).get(site_job_id)
        if status is not None and status.state.is_final:
            return status.state
        await asyncio.sleep(0.5)
    raise AssertionError(f"job {site_job_id} did not end")


async def test_submit_runs_and_reports_allocated_resources(slurm_stack: SlurmStack) -> None:
    conn = connector(slurm_stack)
    req = request()
    site_job_id = await conn.submit(req)
    assert await conn.find(account="alice", job_id=req.job_id) == site_job_id
    assert await wait_final(conn, site_job_id) == SiteState.COMPLETED
    status = (await conn.statuses([site_job_id]))[site_job_id]
    assert status.allocated is not None
    assert (status.allocated.cores, status.allocated.nodes) == (2, 1)
    assert status.elapsed_seconds is not None
    assert status.elapsed_seconds >= 1
    await conn.aclose()


async def test_find_does_not_see_another_accounts_job(slurm_stack: SlurmStack) -> None:
    conn = connector(slurm_stack)
    req = request()
    await conn.submit(req)
    assert await conn.find(account="bob", job_id=req.job_id) is None
    assert await conn.find(account="alice", job_id=str(uuid.uuid4())) is None
    await conn.aclose()


async def test_invalid_partition_is_an_invalid_job(slurm_stack: SlurmStack) -> None:
    conn = connector(slurm_stack)
    with pytest.raises(SiteInvalidJob, match=r"(?i)partition"):
        await conn.submit(request(partition="nonexistent"))
    await conn.aclose()


async def test_a_key_stored_with_line_breaks_still_signs(slurm_stack: SlurmStack) -> None:
    encoded = base64.encodebytes(slurm_stack.cluster("lumi").jwt_key_bytes()).decode()  # wrapped, newline-ended
    conn = connector(slurm_stack, stored=encoded[:20] + "\n" + encoded[20:])
    assert await conn.submit(request())
    await conn.aclose()


async def test_a_stored_key_that_is_not_base64_leaves_the_job_waiting_with_the_reason(slurm_stack: SlurmStack) -> None:
    conn = connector(slurm_stack, stored="not base64 at all!")
    with pytest.raises(SiteUnavailable, match="jwt_key is not base64") as info:
        await conn.submit(request())
    assert "not base64 at all" not in str(info.value)  # the stored value is never echoed
    await conn.aclose()


async def test_wrong_cluster_key_is_an_auth_failure(slurm_stack: SlurmStack) -> None:
    conn = connector(slurm_stack, key=b"x" * 32)
    with pytest.raises(SiteAuthFailed):
        await conn.submit(request())
    await conn.aclose()


async def test_unreachable_daemon_is_site_unavailable(slurm_stack: SlurmStack) -> None:
    conn = connector(slurm_stack, url="http://127.0.0.1:9")
    with pytest.raises(SiteUnavailable):
        await conn.statuses(["1"])
    await conn.aclose()


async def test_cancel_ends_a_running_job_as_cancelled(slurm_stack: SlurmStack) -> None:
    conn = connector(slurm_stack)
    site_job_id = await conn.submit(request(script="#!/bin/bash\nsleep 120\n"))
    for _ in range(60):
        status = (await conn.statuses([site_job_id])).get(site_job_id)
        if status and status.state == SiteState.RUNNING:
            break
        await asyncio.sleep(0.5)
    await conn.cancel(account="alice", site_job_id=site_job_id)
    assert await wait_final(conn, site_job_id) == SiteState.CANCELLED
    await conn.cancel(account="alice", site_job_id=site_job_id)  # cancelling twice is not an error
    await conn.aclose()

"""The ssh connector against the real login node of the test stack: OpenSSH's sshd trusting the gateway's SSH CA
(``TrustedUserCAKeys``), the Slurm 22.05 CLI and the `lumi` cluster.

Certificates come from the fake secrets store's in-memory CA (asyncssh), which the stack's sshd is told to
trust; the Vault SSH engine signs the same shape in production. What is asserted is what a person or an
operator would see: the job runs and is accounted, its output comes back, text full of shell syntax arrives
literally, and refused credentials are a clear ``SiteAuthFailed``.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.clock import FakeClock, SystemClock
from gateway.connectors.base import SiteJobRequest, SiteState
from gateway.connectors.ssh import SshConnector, SshOptions, command_line
from gateway.errors import NotFound, SiteAuthFailed, SiteRejected
from gateway.secrets.fake import FakeSecretStore
from tests.stack.plugin import SlurmStack

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

NASTY = "a b;$(touch {marker})`touch {marker}`'\"\\ *?~ $HOME && echo\nsecond line|rm -rf {marker}&"


# --- the one quoting function, against a real POSIX shell ------------------------------------------------


def shell_argv(argv: list[str]) -> list[str]:
    """What /bin/sh makes of ``command_line(argv)``: each word it passes to printf, NUL-separated."""
    result = subprocess.run(
        ["/bin/sh", "-c", command_line(["printf", "%s\\0", *argv])], capture_output=True, check=True
    )
    return result.stdout.decode().split("\0")[:-1]


def test_command_line_survives_a_real_shell_unchanged(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    argv = [NASTY.format(marker=marker), "", "--flag=$(id)", "-", "'", '"', "\n", "a\tb", "é ü", "`id`"]
    assert shell_argv(argv) == argv
    assert not marker.exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=20), min_size=1, max_size=5))
def test_command_line_round_trips_any_text(argv: list[str]) -> None:
    assert shlex.split(command_line(argv)) == argv
    assert shell_argv(argv) == argv


def test_command_line_refuses_nul_and_empty_commands() -> None:
    with pytest.raises(ValueError, match="NUL"):
        command_line(["echo", "a\x00b"])
    with pytest.raises(ValueError, match="empty"):
        command_line([])


# --- against the login node -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trusted_store(slurm_stack: SlurmStack) -> Iterator[FakeSecretStore]:
    """A secrets store whose CA the stack's sshd trusts for the duration of the module."""
    store = FakeSecretStore()
    slurm_stack.trust_user_ca(store.ca_public_key)
    yield store
    slurm_stack.distrust_user_ca(store.ca_public_key)


def options(stack: SlurmStack, **changes: object) -> SshOptions:
    values: dict[str, object] = {
        "host": stack.ssh.host,
        "port": stack.ssh.ports["lumi"],
        "host_keys": [stack.ssh.host_public_key],
        "status_account": "alice",
    }
    values.update(changes)
    return SshOptions.model_validate(values)


@pytest.fixture
async def conn(slurm_stack: SlurmStack, trusted_store: FakeSecretStore) -> AsyncIterator[SshConnector]:
    connector = SshConnector("lumi", options(slurm_stack), secrets=trusted_store, clock=SystemClock())
    yield connector
    await connector.aclose()


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


async def wait_state(conn: SshConnector, site_job_id: str, wanted: set[SiteState]) -> SiteState:
    for _ in range(240):
        status = (await conn.statuses([site_job_id])).get(site_job_id)
        if status is not None and (status.state in wanted or status.state.is_final):
            return status.state
        await asyncio.sleep(0.25)
    raise AssertionError(f"job {site_job_id} never reached {wanted}")


async def test_submit_runs_is_accounted_and_its_output_comes_back(conn: SshConnector) -> None:
    req = request()
    site_job_id = await conn.submit(req)
    assert await conn.find(account="alice", job_id=req.job_id) == site_job_id
    assert await wait_state(conn, site_job_id, set()) == SiteState.COMPLETED
    status = (await conn.statuses([site_job_id]))[site_job_id]
    assert status.allocated is not None
    assert (status.allocated.nodes, status.allocated.cores, status.allocated.memory_gb) == (1, 2, 2)
    assert status.elapsed_seconds is not None
    assert status.elapsed_seconds >= 1
    assert await conn.output(account="alice", job_id=req.job_id, site_job_id=site_job_id, stream="stdout") == "hello\n"
    assert await conn.output(account="alice", job_id=req.job_id, site_job_id=site_job_id, stream="stderr") == ""
    with pytest.raises(NotFound):
        await conn.output(account="alice", job_id=str(uuid.uuid4()), site_job_id="999999999", stream="stdout")


async def test_find_sees_only_the_accounts_own_stamped_job(conn: SshConnector) -> None:
    req = request()
    await conn.submit(req)
    assert await conn.find(account="bob", job_id=req.job_id) is None
    assert await conn.find(account="alice", job_id=str(uuid.uuid4())) is None


async def test_cancel_ends_a_running_job_and_cancelling_twice_is_fine(conn: SshConnector) -> None:
    site_job_id = await conn.submit(request(script="#!/bin/bash\nsleep 120\n"))
    assert await wait_state(conn, site_job_id, {SiteState.RUNNING}) == SiteState.RUNNING
    await conn.cancel(account="alice", site_job_id=site_job_id)
    assert await wait_state(conn, site_job_id, set()) == SiteState.CANCELLED
    await conn.cancel(account="alice", site_job_id=site_job_id)


async def test_shell_syntax_in_name_script_and_environment_arrives_literally(
    conn: SshConnector, slurm_stack: SlurmStack
) -> None:
    marker = Path(f"/tmp/antenna-pwned-{uuid.uuid4().hex}")
    nasty = NASTY.format(marker=marker)
    script = f'#!/bin/bash\n# {nasty}\nprintf "%s|" "$ANTENNA_VALUE" "$ANTENNA_OTHER"\n: \'{marker}\' $(true) `true`\n'
    req = request(name=nasty, script=script, environment={"ANTENNA_VALUE": nasty, "ANTENNA_OTHER": "x,y=z"})
    site_job_id = await conn.submit(req)
    assert await wait_state(conn, site_job_id, set()) == SiteState.COMPLETED
    output = await conn.output(account="alice", job_id=req.job_id, site_job_id=site_job_id, stream="stdout")
    assert output == f"{nasty}|x,y=z|"
    stored = slurm_stack.run("lumi", ["scontrol", "write", "batch_script", site_job_id, "-"])
    assert stored.returncode == 0, stored.stderr
    assert stored.stdout == script
    listed = slurm_stack.run("lumi", ["squeue", "--json"])
    (comment,) = [j["comment"] for j in json.loads(listed.stdout)["jobs"] if str(j["job_id"]) == site_job_id]
    # The name is kept in the job's comment, on one line and at most 250 characters.
    assert comment == f"antenna job {req.job_id} ({nasty.replace(chr(10), ' ')})"[:250]
    assert "$(touch" in comment
    assert not marker.exists()  # noqa: ASYNC240 - one stat, not worth a thread


async def test_statuses_cost_two_commands_whatever_the_number_of_jobs(
    conn: SshConnector, slurm_stack: SlurmStack
) -> None:
    few = [await conn.submit(request(script="#!/bin/bash\ntrue\n")) for _ in range(2)]
    many = few + [await conn.submit(request(script="#!/bin/bash\ntrue\n")) for _ in range(6)]
    for job in many:
        await wait_state(conn, job, set())
    log = slurm_stack.ssh.log
    port = conn._logins["alice"].conn.get_extra_info("sockname")[1]  # our connection, among other sessions

    def sessions() -> int:
        mine = f"command for alice from 127.0.0.1 port {port} "
        return sum(1 for line in log.read_text(errors="replace").splitlines() if mine in line)

    counts = []
    for jobs in (few, many):
        before = sessions()
        statuses = await conn.statuses(jobs)
        assert {statuses[j].state for j in jobs} == {SiteState.COMPLETED}
        counts.append(sessions() - before)
    assert counts == [2, 2]  # one squeue and one sacct per cycle, not one per job


class WrongPrincipalStore(FakeSecretStore):
    """A CA that signs for bob whatever account it is asked for (a misconfigured Vault role)."""

    async def sign_ssh_key(self, *, site: str, account: str, public_key: str) -> str:
        return await super().sign_ssh_key(site=site, account="bob", public_key=public_key)


async def test_a_certificate_for_another_principal_cannot_act_as_the_account(slurm_stack: SlurmStack) -> None:
    store = WrongPrincipalStore()
    slurm_stack.trust_user_ca(store.ca_public_key)
    try:
        conn = SshConnector("lumi", options(slurm_stack), secrets=store, clock=SystemClock())
        with pytest.raises(SiteAuthFailed, match=r"names \['bob'\]"):
            await conn.submit(request(account="alice"))
        await conn.aclose()
    finally:
        slurm_stack.distrust_user_ca(store.ca_public_key)


async def test_one_account_cannot_cancel_anothers_job(conn: SshConnector) -> None:
    site_job_id = await conn.submit(request(account="bob", script="#!/bin/bash\nsleep 60\n"))
    with pytest.raises(SiteAuthFailed, match=r"(?i)permission denied"):
        await conn.cancel(account="alice", site_job_id=site_job_id)
    await conn.cancel(account="bob", site_job_id=site_job_id)
    assert await wait_state(conn, site_job_id, set()) == SiteState.CANCELLED


async def test_an_expired_certificate_is_refused_by_the_login_node(slurm_stack: SlurmStack) -> None:
    # The store and the gateway share a clock two hours slow: the gateway believes the certificate valid,
    # the login node (on the real clock) sees it expired.
    slow = FakeClock(SystemClock().now() - timedelta(hours=2))
    store = FakeSecretStore(clock=slow, cert_ttl_seconds=600)
    slurm_stack.trust_user_ca(store.ca_public_key)
    try:
        conn = SshConnector("lumi", options(slurm_stack), secrets=store, clock=slow)
        with pytest.raises(SiteAuthFailed, match="refused account alice with a certificate valid until"):
            await conn.submit(request())
        await conn.aclose()
        # With the right clock the gateway sees the expiry itself and says so without trying.
        conn = SshConnector("lumi", options(slurm_stack), secrets=store, clock=SystemClock())
        with pytest.raises(SiteAuthFailed, match="had already expired"):
            await conn.submit(request())
        await conn.aclose()
    finally:
        slurm_stack.distrust_user_ca(store.ca_public_key)


async def test_a_missing_site_account_is_a_clear_auth_failure(conn: SshConnector) -> None:
    with pytest.raises(SiteAuthFailed, match="refused account zed"):
        await conn.submit(request(account="zed"))


async def test_an_account_without_slurm_association_is_rejected(conn: SshConnector) -> None:
    # dave has a Unix account at the site but no Slurm association: the site refuses the job itself.
    with pytest.raises(SiteRejected, match=r"(?i)invalid account"):
        await conn.submit(request(account="dave"))


async def test_an_untrusted_ca_is_refused(slurm_stack: SlurmStack) -> None:
    conn = SshConnector("lumi", options(slurm_stack), secrets=FakeSecretStore(), clock=SystemClock())
    with pytest.raises(SiteAuthFailed, match="may not trust the gateway's SSH CA"):
        await conn.health()
    await conn.aclose()


async def test_the_certificate_is_renewed_before_it_expires(slurm_stack: SlurmStack) -> None:
    # The gateway's clock starts 560 s slow so that, once advanced, it is back on the login node's time:
    # every certificate it is given is valid on the login node too.
    clock = FakeClock(SystemClock().now() - timedelta(seconds=560))
    store = FakeSecretStore(clock=clock, cert_ttl_seconds=600)
    slurm_stack.trust_user_ca(store.ca_public_key)
    try:
        conn = SshConnector("lumi", options(slurm_stack, renew_before_seconds=60), secrets=store, clock=clock)
        await conn.health()
        await conn.health()
        assert store.signed == [("lumi", "alice")]  # pooled: one login serves both commands
        clock.advance(500)  # 100 s of validity left, more than the 60 s margin: kept
        await conn.health()
        assert len(store.signed) == 1
        clock.advance(60)  # 40 s left: a new certificate and a new login before the command
        await conn.health()
        assert len(store.signed) == 2
        await conn.aclose()
    finally:
        slurm_stack.distrust_user_ca(store.ca_public_key)

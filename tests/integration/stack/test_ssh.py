"""The clusters' SSH login node: certificate-only logins, one port per cluster, the Slurm CLI as the person.

Certificates are signed here with asyncssh by the stack's test CA, as the gateway will have Vault's SSH CA
sign them; a CA appended to the trusted-CA file is honoured without restarting sshd.
"""

from __future__ import annotations

import asyncio
import json
import time

import asyncssh
import pytest

from tests.integration.stack.support import wait_accounted
from tests.stack.plugin import SlurmStack

pytestmark = pytest.mark.integration


def certified_key(ca: asyncssh.SSHKey, principal: str) -> tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    now = int(time.time())
    cert = ca.generate_user_certificate(
        key, f"smoke-{principal}", principals=[principal], valid_after=now - 60, valid_before=now + 600
    )
    return key, cert


def stack_ca(stack: SlurmStack) -> asyncssh.SSHKey:
    return asyncssh.read_private_key(stack.ssh.ca_private_key)


async def remote(
    stack: SlurmStack,
    cluster: str,
    user: str,
    credentials: tuple[asyncssh.SSHKey, asyncssh.SSHCertificate],
    command: str,
    stdin: str | None = None,
) -> asyncssh.SSHCompletedProcess:
    async with asyncssh.connect(
        stack.ssh.host,
        port=stack.ssh.ports[cluster],
        username=user,
        client_keys=[credentials],
        known_hosts=str(stack.ssh.known_hosts),
        agent_path=None,
        config=[],
    ) as conn:
        return await conn.run(command, input=stdin, check=False)


def test_the_port_chooses_the_cluster_and_the_cli_runs_as_the_person(slurm_stack: SlurmStack) -> None:
    credentials = certified_key(stack_ca(slurm_stack), "alice")

    async def scenario() -> dict[str, tuple[str, str]]:
        seen = {}
        for cluster in ["lumi", "jupiter", "lucia"]:
            sinfo = await remote(slurm_stack, cluster, "alice", credentials, "sinfo --noheader --format=%R")
            assert sinfo.exit_status == 0, sinfo.stderr
            squeue = await remote(slurm_stack, cluster, "alice", credentials, "squeue --json")
            assert squeue.exit_status == 0, squeue.stderr
            assert json.loads(str(squeue.stdout))["errors"] == []
            whoami = await remote(slurm_stack, cluster, "alice", credentials, "id -un")
            seen[cluster] = (str(sinfo.stdout), str(whoami.stdout).strip())
        return seen

    seen = asyncio.run(scenario())
    assert set(seen["lumi"][0].split()) == {"standard", "small", "debug", "standard-g", "small-g", "dev-g"}
    assert set(seen["jupiter"][0].split()) == {"booster"}
    assert set(seen["lucia"][0].split()) == {"batch", "debug", "gpu"}
    assert {who for _, who in seen.values()} == {"alice"}


def test_a_job_submitted_over_ssh_runs_and_is_accounted(slurm_stack: SlurmStack) -> None:
    credentials = certified_key(stack_ca(slurm_stack), "carol")
    script = "#!/bin/bash\n#SBATCH -t 5\nsleep 1\necho over-ssh\n"
    result = asyncio.run(
        remote(slurm_stack, "jupiter", "carol", credentials, "sbatch --parsable -J ssh-smoke", stdin=script)
    )
    assert result.exit_status == 0, result.stderr
    job_id = str(result.stdout).strip()
    record = wait_accounted(slurm_stack, [("jupiter", job_id)])[("jupiter", job_id)]
    assert record.state == "COMPLETED"
    assert record.user == "carol"
    assert record.alloc_tres["cpu"] == "288"  # booster: whole nodes
    assert (slurm_stack.person("carol").home / f"slurm-{job_id}.out").read_text() == "over-ssh\n"


def test_a_certificate_for_bob_cannot_log_in_as_alice(slurm_stack: SlurmStack) -> None:
    credentials = certified_key(stack_ca(slurm_stack), "bob")
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(remote(slurm_stack, "lumi", "alice", credentials, "true"))
    # The same certificate is good for bob himself: the refusal is about the principal.
    assert asyncio.run(remote(slurm_stack, "lumi", "bob", credentials, "true")).exit_status == 0


def test_a_ca_appended_to_the_trusted_file_is_honoured_without_restart(slurm_stack: SlurmStack) -> None:
    other_ca = asyncssh.generate_private_key("ssh-ed25519")
    credentials = certified_key(other_ca, "alice")
    public = other_ca.export_public_key().decode()
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(remote(slurm_stack, "lucia", "alice", credentials, "true"))
    slurm_stack.trust_user_ca(public)
    try:
        result = asyncio.run(remote(slurm_stack, "lucia", "alice", credentials, "id -un"))
        assert result.exit_status == 0, result.stderr
        assert str(result.stdout).strip() == "alice"
    finally:
        slurm_stack.distrust_user_ca(public)
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(remote(slurm_stack, "lucia", "alice", credentials, "true"))

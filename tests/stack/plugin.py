"""Pytest plugin for the Slurm test stack: the session fixture `slurm_stack` and its typed description.

The fixture runs `tests/stack/stack up` once per session (idempotent: a running stack is reused) and parses
`tests/stack/stack env`. When the stack cannot start the fixture fails with the reason and the script's
output, never skips. Each session holds a lease on the stack; the last session to end stops it if a test
session started it. A stack started by hand stays up, and so does any when ANTENNA_STACK_KEEP=1.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent / "stack"
UP_TIMEOUT = 900  # seconds; covers a first apt-get install on a fresh machine


@dataclass(frozen=True)
class StackPartition:
    name: str
    default: bool
    exclusive: bool  # whole nodes only (OverSubscribe=EXCLUSIVE)
    max_time: str  # Slurm's format, e.g. "2-00:00:00"
    max_nodes: int | None
    nodes: tuple[str, ...]
    cpus_per_node: int
    memory_mb_per_node: int
    gpus_per_node: int
    gpu_type: str | None
    def_mem_per_cpu_mb: int | None


@dataclass(frozen=True)
class StackCluster:
    name: str
    slurm_conf: Path
    slurmctld_port: int
    slurmdbd_port: int
    slurmrestd_url: str | None  # e.g. "http://127.0.0.1:17802"; None when the cluster runs none
    openapi_versions: tuple[str, ...]  # ("v0.0.38", "dbv0.0.38")
    jwt_key: Path  # the 32-byte HS256 key slurmctld and slurmdbd verify tokens with (root, 0600)
    ssh_port: int  # the cluster's login node: sessions on this port get its slurm.conf
    accounts: tuple[str, ...]
    nodes: tuple[str, ...]
    partitions: tuple[StackPartition, ...]

    def partition(self, name: str) -> StackPartition:
        for partition in self.partitions:
            if partition.name == name:
                return partition
        raise KeyError(f"{self.name} has no partition {name!r}")

    def cli_env(self) -> dict[str, str]:
        """An environment in which the Slurm commands (sbatch, sacct, scontrol ...) talk to this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.slurm_conf)}

    def jwt_key_bytes(self) -> bytes:
        return self.jwt_key.read_bytes()


@dataclass(frozen=True)
class StackSsh:
    host: str
    ports: Mapping[str, int]  # cluster name -> port of its login node
    host_public_key: str  # "ssh-ed25519 AAAA..."
    known_hosts: Path  # lines for every port, for ssh / asyncssh known_hosts
    trusted_user_ca_keys: Path  # sshd's TrustedUserCAKeys: append a CA (trust_user_ca) to trust it
    ca_private_key: Path  # the stack's own test CA (OpenSSH format, no passphrase)
    ca_public_key: Path
    log: Path  # sshd's log: why a login was refused


@dataclass(frozen=True)
class StackPerson:
    name: str  # Unix user name, also the certificate principal it logs in with
    uid: int
    home: Path
    accounts: Mapping[str, tuple[str, ...]]  # cluster name -> Slurm accounts (default first)


@dataclass(frozen=True)
class SlurmStack:
    stack_dir: Path
    slurm_version: str
    munge_socket: Path
    log_dir: Path  # every daemon's output, named after the daemon (`stack status` lists the names)
    clusters: tuple[StackCluster, ...]
    ssh: StackSsh
    people: tuple[StackPerson, ...]

    def cluster(self, name: str) -> StackCluster:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise KeyError(f"the stack has no cluster {name!r}")

    def person(self, name: str) -> StackPerson:
        for person in self.people:
            if person.name == name:
                return person
        raise KeyError(f"the stack has no test person {name!r}")

    def run(self, cluster: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run a Slurm command on `cluster` as this process's user (root: sees every job)."""
        return subprocess.run(
            list(argv),
            env=self.cluster(cluster).cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def run_as(
        self, person: str, cluster: str, argv: Sequence[str], *, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm command on `cluster` as the test person, here (not over ssh)."""
        home = self.person(person).home
        return subprocess.run(
            ["runuser", "-u", person, "--", *argv],
            env={**self.cluster(cluster).cli_env(), "HOME": str(home)},
            cwd=home,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def trust_user_ca(self, public_key: str) -> None:
        """Make sshd accept user certificates signed by this CA (read at each login; no restart)."""
        line = " ".join(public_key.split()[:2])
        with _locked(self.ssh.trusted_user_ca_keys) as lines:
            if line not in (" ".join(existing.split()[:2]) for existing in lines):
                lines.append(line)

    def distrust_user_ca(self, public_key: str) -> None:
        line = " ".join(public_key.split()[:2])
        with _locked(self.ssh.trusted_user_ca_keys) as lines:
            lines[:] = [existing for existing in lines if " ".join(existing.split()[:2]) != line]

    def stop(self, *daemons: str) -> None:
        """Stop daemons by name (`tests/stack/stack status` lists them), e.g. "lumi-slurmrestd"."""
        result = _script("stop", *daemons, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"stack stop {' '.join(daemons)} failed:\n{result.stdout}")

    def start(self) -> None:
        """Start whatever is stopped again (`stack up`)."""
        result = _script("up", "--lease-pid", str(os.getpid()), timeout=UP_TIMEOUT)
        if result.returncode != 0:
            raise RuntimeError(f"stack up failed:\n{_tail(result.stdout)}")


class _locked:
    """The lines of a file, rewritten on exit, under an exclusive lock (tests may run in parallel)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []

    def __enter__(self) -> list[str]:
        self.handle = self.path.open("r+")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        self.lines = [line for line in self.handle.read().splitlines() if line.strip()]
        return self.lines

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.handle.seek(0)
                self.handle.write("".join(f"{line}\n" for line in self.lines))
                self.handle.truncate()
        finally:
            self.handle.close()


def parse_stack(data: Mapping[str, Any]) -> SlurmStack:
    """The typed form of `tests/stack/stack env`."""
    if data.get("version") != 1:
        raise ValueError(f"unknown stack description version {data.get('version')!r}")
    clusters = tuple(
        StackCluster(
            name=c["name"],
            slurm_conf=Path(c["slurm_conf"]),
            slurmctld_port=c["slurmctld_port"],
            slurmdbd_port=c["slurmdbd_port"],
            slurmrestd_url=c["slurmrestd_url"],
            openapi_versions=tuple(c["openapi_versions"]),
            jwt_key=Path(c["jwt_key"]),
            ssh_port=c["ssh_port"],
            accounts=tuple(c["accounts"]),
            nodes=tuple(c["nodes"]),
            partitions=tuple(
                StackPartition(
                    name=p["name"],
                    default=p["default"],
                    exclusive=p["exclusive"],
                    max_time=p["max_time"],
                    max_nodes=p["max_nodes"],
                    nodes=tuple(p["nodes"]),
                    cpus_per_node=p["cpus_per_node"],
                    memory_mb_per_node=p["memory_mb_per_node"],
                    gpus_per_node=p["gpus_per_node"],
                    gpu_type=p["gpu_type"],
                    def_mem_per_cpu_mb=p["def_mem_per_cpu_mb"],
                )
                for p in c["partitions"]
            ),
        )
        for c in data["clusters"]
    )
    ssh = data["ssh"]
    return SlurmStack(
        stack_dir=Path(data["stack_dir"]),
        slurm_version=data["slurm_version"],
        munge_socket=Path(data["munge_socket"]),
        log_dir=Path(data["log_dir"]),
        clusters=clusters,
        ssh=StackSsh(
            host=ssh["host"],
            ports=dict(ssh["ports"]),
            host_public_key=ssh["host_public_key"],
            known_hosts=Path(ssh["known_hosts"]),
            trusted_user_ca_keys=Path(ssh["trusted_user_ca_keys"]),
            ca_private_key=Path(ssh["ca_private_key"]),
            ca_public_key=Path(ssh["ca_public_key"]),
            log=Path(ssh["log"]),
        ),
        people=tuple(
            StackPerson(
                name=p["name"],
                uid=p["uid"],
                home=Path(p["home"]),
                accounts={k: tuple(v) for k, v in p["accounts"].items()},
            )
            for p in data["people"]
        ),
    )


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def _tail(output: str, lines: int = 40) -> str:
    return "\n".join(output.splitlines()[-lines:])


def start_stack() -> SlurmStack:
    """`stack up` then `stack env`, holding a lease for this process; fails the test when it cannot."""
    if os.geteuid() != 0:
        pytest.fail(
            "the Slurm test stack needs root (it installs Debian packages, adds test users and "
            "starts slurmctld/slurmd/slurmdbd/sshd); run the integration tests as root",
            pytrace=False,
        )
    try:
        up = _script("up", "--lease-pid", str(os.getpid()), timeout=UP_TIMEOUT)
    except subprocess.TimeoutExpired as error:
        raw = error.output or b""
        output = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        pytest.fail(f"`{SCRIPT} up` did not finish in {UP_TIMEOUT} s:\n{_tail(output)}", pytrace=False)
    if up.returncode != 0:
        reason = next(
            (line for line in reversed(up.stdout.splitlines()) if "FAILED" in line),
            f"exit status {up.returncode}",
        )
        pytest.fail(
            f"the Slurm test stack did not start: {reason}\n--- `{SCRIPT} up` output (tail):\n{_tail(up.stdout)}",
            pytrace=False,
        )
    env = subprocess.run([str(SCRIPT), "env"], capture_output=True, text=True, timeout=60, check=False)
    if env.returncode != 0:
        pytest.fail(f"`{SCRIPT} env` failed: {env.stderr.strip()}", pytrace=False)
    try:
        return parse_stack(json.loads(env.stdout))
    except (ValueError, KeyError, TypeError) as error:
        pytest.fail(f"`{SCRIPT} env` printed an unexpected description: {error!r}", pytrace=False)


def release_stack() -> None:
    """End this session's lease: the stack stops if no other session uses it and tests started it."""
    keep = ["--keep"] if os.environ.get("ANTENNA_STACK_KEEP") == "1" else []
    _script("release", "--lease-pid", str(os.getpid()), *keep, timeout=120)


@pytest.fixture(scope="session")
def slurm_stack() -> Iterator[SlurmStack]:
    """Three real Slurm clusters (lumi, jupiter, lucia) with slurmdbd, slurmrestd and an SSH login node."""
    stack = start_stack()
    yield stack
    release_stack()

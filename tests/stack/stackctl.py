"""The test stack: three real Slurm clusters (lumi, jupiter, lucia) with slurmdbd, slurmrestd, munge and sshd.

Run through `tests/stack/stack services|up|down|purge|status|env|stop|release|ssh`. Standard library only: it
runs before `uv sync` and by hand. Needs root: it installs Debian packages, creates Unix accounts and starts
daemons.

`services` starts what a developer's machine would run for the suite: PostgreSQL, MariaDB and Redis on their
usual loopback ports, each with its own data under the stack directory. A port already served by the
machine's own server is used as it is. `up` starts them too (slurmdbd keeps its accounting in MariaDB).

Every daemon runs in the foreground of its own session, recorded in a pid file with its start time;
`down` signals only those processes, their descendants and job steps listening under the stack
directory, never anything found by name.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import functools
import hashlib
import hmac
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import string
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TEMPLATES = HERE / "templates"


def searchable_by_others(path: Path) -> Path | None:
    """The first existing directory on the way to `path` that other users cannot enter, if any."""
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return None


def default_stack_dir() -> Path:
    """The repository's var/stack; under /tmp when the checkout is private (e.g. below /root)."""
    preferred = REPO / "var" / "stack"
    if searchable_by_others(preferred) is None:
        return preferred
    digest = hashlib.sha256(str(REPO).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"antenna-stack-{digest}"


STACK_DIR = Path(os.environ.get("ANTENNA_STACK_DIR") or default_stack_dir()).resolve()
PORT_BASE = int(os.environ.get("ANTENNA_STACK_PORT_BASE", "17800"))
MARIADB_HOST = "127.0.0.1"
MARIADB_PORT = 3306
DB_USER = f"antenna_stack_{PORT_BASE}"  # one user and set of databases per stack (port base)
REST_USER = "slurm"  # the packaged unprivileged user; slurmrestd refuses root and SlurmUser
OPENAPI_PLUGINS = ("v0.0.38", "dbv0.0.38")
ENV_VERSION = 1

PACKAGES = (
    "slurm-wlm",
    "slurmrestd",
    "slurmdbd",
    "slurm-wlm-jwt-plugin",  # auth/jwt for slurmctld and slurmdbd; slurmrestd alone lacks it
    "slurm-wlm-mysql-plugin",
    "munge",
    "openssh-server",
    "openssh-client",
    "mariadb-client",
    "iproute2",
)

READY_TIMEOUT = 45.0


class StackError(Exception):
    """A step failed; the message says which and why."""


def log(message: str) -> None:
    print(f"[stack] {message}", flush=True)


# ---------------------------------------------------------------------------------------------------
# The description of the clusters (clusters.toml) and the layout derived from it.


@dataclass(frozen=True)
class NodeType:
    name: str
    nodes: tuple[str, ...]
    sockets: int
    cores_per_socket: int
    memory_mb: int
    gpus: int
    gpu_type: str | None

    @property
    def cpus(self) -> int:
        return self.sockets * self.cores_per_socket


@dataclass(frozen=True)
class Partition:
    name: str
    node_type: NodeType
    default: bool
    exclusive: bool
    max_time: str
    max_nodes: int | None
    def_mem_per_cpu_mb: int | None


@dataclass(frozen=True)
class Cluster:
    name: str
    index: int
    slurmrestd: bool
    node_types: tuple[NodeType, ...]
    partitions: tuple[Partition, ...]
    accounts: tuple[str, ...]
    users: dict[str, tuple[str, ...]]  # person -> Slurm accounts, default first

    # Ports: a block of 20 per cluster; slurmd ports from offset 10.
    @property
    def slurmctld_port(self) -> int:
        return PORT_BASE + 20 * self.index

    @property
    def slurmdbd_port(self) -> int:
        return self.slurmctld_port + 1

    @property
    def slurmrestd_port(self) -> int:
        return self.slurmctld_port + 2

    @property
    def ssh_port(self) -> int:
        return self.slurmctld_port + 3

    @property
    def nodes(self) -> list[tuple[str, NodeType]]:
        return [(node, nt) for nt in self.node_types for node in nt.nodes]

    def slurmd_port(self, node: str) -> int:
        names = [n for n, _ in self.nodes]
        return self.slurmctld_port + 10 + names.index(node)

    # Paths.
    @property
    def root(self) -> Path:
        return STACK_DIR / self.name

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def slurm_conf(self) -> Path:
        return self.etc / "slurm.conf"

    @property
    def jwt_key(self) -> Path:
        return self.etc / "jwt.key"

    @property
    def db_name(self) -> str:
        return f"antenna_stack_{PORT_BASE}_{self.name}"

    def env(self) -> dict[str, str]:
        return {**base_env(), "SLURM_CONF": str(self.slurm_conf)}


@dataclass(frozen=True)
class Person:
    name: str
    accounts: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Layout:
    clusters: tuple[Cluster, ...]
    people: tuple[Person, ...]


def load_layout(path: Path = HERE / "clusters.toml") -> Layout:
    data = tomllib.loads(path.read_text())
    people = tuple(Person(p["name"], {c: tuple(a) for c, a in p.get("accounts", {}).items()}) for p in data["people"])
    clusters = []
    for index, c in enumerate(data["clusters"]):
        types = {
            t["name"]: NodeType(
                name=t["name"],
                nodes=tuple(t["nodes"]),
                sockets=t["sockets"],
                cores_per_socket=t["cores_per_socket"],
                memory_mb=t["memory_mb"],
                gpus=t.get("gpus", 0),
                gpu_type=t.get("gpu_type"),
            )
            for t in c["node_types"]
        }
        partitions = tuple(
            Partition(
                name=p["name"],
                node_type=types[p["node_type"]],
                default=p.get("default", False),
                exclusive=p.get("exclusive", False),
                max_time=p["max_time"],
                max_nodes=p.get("max_nodes"),
                def_mem_per_cpu_mb=p.get("def_mem_per_cpu_mb"),
            )
            for p in c["partitions"]
        )
        users = {p.name: p.accounts[c["name"]] for p in people if p.accounts.get(c["name"])}
        accounts = tuple(dict.fromkeys(a for accts in users.values() for a in accts))
        clusters.append(
            Cluster(
                name=c["name"],
                index=index,
                slurmrestd=c.get("slurmrestd", False),
                node_types=tuple(types.values()),
                partitions=partitions,
                accounts=accounts,
                users=users,
            )
        )
    return Layout(tuple(clusters), people)


# Stack-wide paths.
RUN = STACK_DIR / "run"  # the daemons' own pid files
PIDS = STACK_DIR / "pids"  # the stack's records of what it started
LOGS = STACK_DIR / "log"
MUNGE_DIR = STACK_DIR / "munge"
MUNGE_SOCKET = MUNGE_DIR / "munge.socket"
MUNGE_KEY = MUNGE_DIR / "munge.key"
SSH_DIR = STACK_DIR / "ssh"
SSHD_CONFIG = SSH_DIR / "sshd_config"
HOST_KEY = SSH_DIR / "ssh_host_ed25519_key"
CA_KEY = SSH_DIR / "ca"
TRUSTED_CA_KEYS = SSH_DIR / "trusted_user_ca_keys"
KNOWN_HOSTS = SSH_DIR / "known_hosts"
DB_SECRET = STACK_DIR / "mariadb.secret"
DESCRIPTION = STACK_DIR / "stack.json"
LOCK = STACK_DIR / ".lock"
LEASES = STACK_DIR / "leases"
STARTED_BY_TESTS = LEASES / "started-by-tests"


def base_env() -> dict[str, str]:
    """A clean environment for daemons and tools: nothing of the caller's leaks into the stack."""
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/root",
    }


# ---------------------------------------------------------------------------------------------------
# Small helpers.


def run(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    input_text: str | None = None,
    check: bool = True,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        argv,
        env=env or base_env(),
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise StackError(f"`{' '.join(argv)}` exited with {proc.returncode}: {(proc.stderr or proc.stdout).strip()}")
    return proc


def write_if_changed(path: Path, content: str | bytes, mode: int) -> None:
    data = content.encode() if isinstance(content, str) else content
    if not path.exists() or path.read_bytes() != data:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.chmod(mode)
        tmp.replace(path)
    path.chmod(mode)


def render(template: str, **values: object) -> str:
    return string.Template((TEMPLATES / template).read_text()).substitute(values)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def listening(port: int) -> Callable[[], bool]:
    return lambda: port_open(port)


def wait_until(what: str, check: Callable[[], bool], timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(0.1)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def hs256_token(key: bytes, user: str, lifetime: int = 60) -> str:
    """An HS256 JWT as slurmctld accepts it (claims sun, iat, exp); used only to probe slurmrestd."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sun": user, "iat": now, "exp": now + lifetime}).encode())
    signature = hmac.new(key, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64(signature)}"


# ---------------------------------------------------------------------------------------------------
# Processes: pid files under pids/ name the process by pid and start time, so a recycled pid is never
# mistaken for ours. Programs that rewrite their process title clobber /proc/PID/environ, so no tag
# in the environment would survive; job steps are found by their sockets under the stack directory.


def _stat_fields(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _alive(pid: int) -> bool:
    """True while any thread runs: a dead main thread shows as a zombie while the others still serve."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        with contextlib.suppress(OSError, IndexError):
            if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                return True
    return False


def _start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if len(fields) > 19 else None


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        fields = _stat_fields(int(entry.name)) if entry.name.isdigit() else []
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _socket_holders() -> list[int]:
    """Processes listening on a Unix socket under the stack directory (munged, slurmstepd)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 8 and parts[7].startswith(f"{STACK_DIR}/"):
                inodes.add(f"socket:[{parts[6]}]")
    holders = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if any(str(fd.readlink()) in inodes for fd in (entry / "fd").iterdir()):
                holders.append(int(entry.name))
    return holders


def _terminate(pids: list[int], grace: float = 10.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@dataclass
class Daemon:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Callable[[], bool]
    config: list[Path] = field(default_factory=list)  # a change restarts the daemon
    user: str | None = None
    port: int | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> Path:
        return PIDS / f"{self.name}.json"

    @property
    def log_file(self) -> Path:
        return LOGS / f"{self.name}.log"

    def fingerprint(self) -> str:
        digest = hashlib.sha256(json.dumps(self.argv).encode())
        for path in self.config:
            digest.update(path.read_bytes())
        return digest.hexdigest()

    def _record(self) -> dict[str, Any]:
        try:
            record: dict[str, Any] = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return {}
        return record

    def pid(self) -> int | None:
        record = self._record()
        pid = record.get("pid")
        if isinstance(pid, int) and _alive(pid) and _start_time(pid) == record.get("start"):
            return pid
        return None

    def start(self) -> bool:
        """Start unless already running with the same configuration; True when started."""
        if self.pid() is not None:
            if self._record().get("fingerprint") == self.fingerprint():
                return False
            log(f"{self.name}: configuration changed, restarting")
            self.stop()
        port_free = time.monotonic() + 5  # a daemon just stopped may still be closing its socket
        while self.port is not None and port_open(self.port) and time.monotonic() < port_free:
            time.sleep(0.1)
        if self.port is not None and port_open(self.port):
            raise StackError(
                f"{self.name}: port {self.port} is taken by a process that is not this stack's; "
                "stop it or set ANTENNA_STACK_PORT_BASE"
            )
        user_kwargs: dict[str, Any] = {}
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            user_kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        with self.log_file.open("ab") as out:
            out.write(f"--- started {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=STACK_DIR,
                start_new_session=True,
                **user_kwargs,
            )
        record = {
            "pid": self.proc.pid,
            "start": _start_time(self.proc.pid),
            "fingerprint": self.fingerprint(),
            "argv": self.argv,
        }
        self.pid_file.write_text(json.dumps(record) + "\n")
        return True

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.ready():
            if self.proc is not None and self.proc.poll() is not None:
                raise StackError(
                    f"{self.name} exited with {self.proc.returncode}; its log {self.log_file}:\n{tail(self.log_file)}"
                )
            if time.monotonic() > deadline:
                raise StackError(
                    f"{self.name} not ready after {READY_TIMEOUT:.0f} s; its log {self.log_file}:\n"
                    f"{tail(self.log_file)}"
                )
            time.sleep(0.1)

    @property
    def kind(self) -> str:
        return self.argv[0].rsplit("/", 1)[-1]

    def stop(self) -> bool:
        return bool(stop_daemons([self]))


def stop_daemons(daemons: list[Daemon]) -> list[str]:
    """Signal them all at once, then wait: a tier stops in one grace period, not one each."""
    victims: list[int] = []
    stopped = []
    for daemon in daemons:
        pid = daemon.pid()
        daemon.pid_file.unlink(missing_ok=True)
        if pid is not None:
            # Job steps (slurmstepd and the job's processes) outlive slurmd: take them down with it.
            victims += [pid, *_descendants(pid)]
            stopped.append(daemon.name)
    _terminate(victims)
    return stopped


def start_all(daemons: list[Daemon]) -> list[str]:
    started = [d.name for d in daemons if d.start()]
    for d in daemons:
        d.wait_ready()
    return started


# ---------------------------------------------------------------------------------------------------
# Preparing the machine: packages, accounts, keys, the database.


def require_root() -> None:
    if os.geteuid() != 0:
        raise StackError("the stack needs root: it installs packages, adds users and starts daemons")


POLICY_RC = Path("/usr/sbin/policy-rc.d")


def ensure_packages(packages: tuple[str, ...] = PACKAGES) -> None:
    query = run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *packages], check=False)
    installed = {line.split()[0] for line in query.stdout.splitlines() if line.endswith(" installed")}
    missing = [p for p in packages if p not in installed]
    if not missing:
        return
    log(f"installing {' '.join(missing)}")
    started = time.monotonic()
    env = {**base_env(), "DEBIAN_FRONTEND": "noninteractive"}
    # The packages' maintainer scripts would start the system's own PostgreSQL, MariaDB or Redis on the ports
    # the stack serves: forbid service starts during the install (only when the machine has no policy).
    created_policy = not POLICY_RC.exists()
    if created_policy:
        POLICY_RC.write_text("#!/bin/sh\n# no service starts during the test stack's package installs\nexit 101\n")
        POLICY_RC.chmod(0o755)
    try:
        apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]
        run([*apt, "update", "-qq"], env=env, timeout=600)
        run([*apt, "install", "-y", "-qq", "--no-install-recommends", *missing], env=env, timeout=1200)
    finally:
        if created_policy:
            POLICY_RC.unlink(missing_ok=True)
    log(f"installed in {time.monotonic() - started:.1f} s")


def check_reachable_by_others() -> None:
    """Test people and slurmrestd read slurm.conf and the munge socket: every parent must be searchable."""
    private = searchable_by_others(STACK_DIR)
    if private is not None:
        raise StackError(
            f"{private} is not searchable by other users, so test people and slurmrestd cannot "
            "read the stack's slurm.conf; set ANTENNA_STACK_DIR to a directory under a "
            "world-searchable path"
        )
    if len(str(MUNGE_SOCKET)) > 100:
        raise StackError(f"{MUNGE_SOCKET} is too long for a Unix socket; set ANTENNA_STACK_DIR")


def ensure_people(layout: Layout) -> None:
    for person in layout.people:
        try:
            pwd.getpwnam(person.name)
        except KeyError:
            # '*' (not the default '!'): no password, yet not "locked" in sshd's eyes (UsePAM no).
            run(["useradd", "--create-home", "--shell", "/bin/bash", "--password", "*", person.name])
            continue
        shadow = run(["getent", "shadow", person.name]).stdout.split(":")
        if len(shadow) > 1 and shadow[1].startswith("!"):
            run(["usermod", "--password", "*", person.name])


def ensure_dirs(layout: Layout) -> None:
    for path, mode in [
        (STACK_DIR, 0o755),
        (RUN, 0o755),
        (PIDS, 0o755),
        (LOGS, 0o755),
        (MUNGE_DIR, 0o755),
        (SSH_DIR, 0o755),
    ]:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
    for cluster in layout.clusters:
        for sub in ["etc", "state", "spool", "dev"]:
            (cluster.root / sub).mkdir(parents=True, exist_ok=True)
        cluster.root.chmod(0o755)
        cluster.etc.chmod(0o755)
        (cluster.root / "state").chmod(0o700)
        for node, _ in cluster.nodes:
            (cluster.root / "spool" / node).mkdir(exist_ok=True)


def ensure_secret_file(path: Path, size: int) -> bytes:
    if not path.exists() or path.stat().st_size != size:
        write_if_changed(path, secrets.token_bytes(size), 0o600)
    path.chmod(0o600)
    return path.read_bytes()


def ensure_ssh_keys() -> None:
    for key, comment in [(HOST_KEY, "antenna-stack-host"), (CA_KEY, "antenna-stack-test-ca")]:
        if not key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
    ca_line = (CA_KEY.parent / "ca.pub").read_text().strip()
    # Tests may append other CAs (a Vault SSH CA): add ours if missing, never rewrite the file.
    existing = TRUSTED_CA_KEYS.read_text() if TRUSTED_CA_KEYS.exists() else ""
    if ca_line not in existing.splitlines():
        with TRUSTED_CA_KEYS.open("a") as out:
            if existing and not existing.endswith("\n"):
                out.write("\n")
            out.write(ca_line + "\n")
    TRUSTED_CA_KEYS.chmod(0o644)


def ensure_fake_gpus(cluster: Cluster) -> dict[str, list[Path]]:
    """Character devices (like /dev/null) that slurmd hands out as GPUs; plain files if mknod is denied."""
    devices: dict[str, list[Path]] = {}
    for node, nt in cluster.nodes:
        if not nt.gpus:
            continue
        node_dir = cluster.root / "dev" / node
        node_dir.mkdir(exist_ok=True)
        devices[node] = []
        for i in range(nt.gpus):
            path = node_dir / f"gpu{i}"
            if not path.exists():
                try:
                    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
                except PermissionError:
                    path.touch(0o666)
            devices[node].append(path)
    return devices


def mariadb_sql(sql: str) -> str:
    proc = run(
        ["mysql", "--batch", "--skip-column-names", "-h", MARIADB_HOST, "-P", str(MARIADB_PORT), "-u", "root"],
        input_text=sql,
        check=False,
    )
    if proc.returncode != 0:
        raise StackError(
            f"MariaDB at {MARIADB_HOST}:{MARIADB_PORT} (user root, no password) refused: {proc.stderr.strip()}"
        )
    return proc.stdout


def refuse_foreign_daemons(layout: Layout) -> None:
    """Stop before touching anything if another stack (another checkout, same port base) serves these ports:
    this one would otherwise take the accounting databases from under that stack's running slurmdbd."""
    for daemon in all_daemons(layout):
        if daemon.port is not None and daemon.pid() is None and port_open(daemon.port):
            raise StackError(
                f"port {daemon.port} ({daemon.name}) is served by a process this stack did not start, probably "
                "another checkout's stack: run `tests/stack/stack down` there, or give this one its own "
                "ANTENNA_STACK_PORT_BASE"
            )


def ensure_database(layout: Layout) -> str:
    password = secrets.token_hex(16)
    if DB_SECRET.exists():
        password = DB_SECRET.read_text().strip()
    else:
        write_if_changed(DB_SECRET, password + "\n", 0o600)
    statements = []
    for host in ["localhost", "127.0.0.1"]:
        account = f"'{DB_USER}'@'{host}'"
        statements += [
            f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{password}';",
            f"ALTER USER {account} IDENTIFIED BY '{password}';",
        ]
        for cluster in layout.clusters:
            statements.append(f"GRANT ALL ON `{cluster.db_name}`.* TO {account};")
    for cluster in layout.clusters:
        statements.insert(0, f"CREATE DATABASE IF NOT EXISTS `{cluster.db_name}`;")
        # A controller with no saved state numbers its jobs from 1 again: accounting kept from an earlier
        # one (a removed checkout, an earlier CI clone on this machine) would answer for the new jobs' ids.
        if not any((cluster.root / "state").iterdir()) and slurmdbd(cluster).pid() is None:
            statements.insert(0, f"DROP DATABASE IF EXISTS `{cluster.db_name}`;")
            log(f"{cluster.name}: new controller state, so new accounting (database {cluster.db_name})")
    mariadb_sql("\n".join(statements))  # over stdin: the password never shows in a process list
    return password


# ---------------------------------------------------------------------------------------------------
# Configuration files.


def node_lines(cluster: Cluster) -> str:
    lines = []
    for node, nt in cluster.nodes:
        gres = f" Gres=gpu:{nt.gpu_type}:{nt.gpus}" if nt.gpus else ""
        lines.append(
            f"NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 "
            f"Port={cluster.slurmd_port(node)} CPUs={nt.cpus} Boards=1 SocketsPerBoard={nt.sockets} "
            f"CoresPerSocket={nt.cores_per_socket} ThreadsPerCore=1 RealMemory={nt.memory_mb}{gres} "
            "State=UNKNOWN"
        )
    return "\n".join(lines)


def partition_lines(cluster: Cluster) -> str:
    lines = []
    for p in cluster.partitions:
        parts = [
            f"PartitionName={p.name}",
            f"Nodes={','.join(p.node_type.nodes)}",
            f"MaxTime={p.max_time}",
            f"Default={'YES' if p.default else 'NO'}",
            f"OverSubscribe={'EXCLUSIVE' if p.exclusive else 'NO'}",
            "State=UP",
        ]
        if p.max_nodes:
            parts.append(f"MaxNodes={p.max_nodes}")
        if p.def_mem_per_cpu_mb:
            parts.append(f"DefMemPerCPU={p.def_mem_per_cpu_mb}")
        lines.append(" ".join(parts))
    return "\n".join(lines)


def write_cluster_config(cluster: Cluster, db_password: str) -> None:
    common = {
        "cluster": cluster.name,
        "munge_socket": MUNGE_SOCKET,
        "jwt_key": cluster.jwt_key,
        "run_dir": RUN / cluster.name,
        "slurmdbd_port": cluster.slurmdbd_port,
    }
    (RUN / cluster.name).mkdir(exist_ok=True)
    ensure_secret_file(cluster.jwt_key, 32)
    slurm_conf = render(
        "slurm.conf.in",
        **common,
        slurmctld_port=cluster.slurmctld_port,
        slurmd_port=cluster.slurmctld_port + 10,
        state_dir=cluster.root / "state",
        spool_dir=cluster.root / "spool",
        nodes=node_lines(cluster),
        partitions=partition_lines(cluster),
    )
    write_if_changed(cluster.slurm_conf, slurm_conf, 0o644)
    gres = ["AutoDetect=off"]
    for node, paths in ensure_fake_gpus(cluster).items():
        nt = dict(cluster.nodes)[node]
        files = ",".join(str(p) for p in paths)
        gres.append(f"NodeName={node} Name=gpu Type={nt.gpu_type} File={files}")
    write_if_changed(cluster.etc / "gres.conf", "\n".join(gres) + "\n", 0o644)
    # slurmdbd reads slurmdbd.conf from beside slurm.conf (it has no option to name it).
    dbd_conf = render(
        "slurmdbd.conf.in",
        **common,
        mariadb_port=MARIADB_PORT,
        db_user=DB_USER,
        db_password=db_password,
        db_name=cluster.db_name,
    )
    write_if_changed(cluster.etc / "slurmdbd.conf", dbd_conf, 0o600)


def write_sshd_config(layout: Layout) -> None:
    listen = "\n".join(f"ListenAddress 127.0.0.1:{c.ssh_port}" for c in layout.clusters)
    matches = "\n".join(
        f"Match LocalPort {c.ssh_port}\n    SetEnv SLURM_CONF={c.slurm_conf} SLURM_CLUSTER_NAME={c.name}"
        for c in layout.clusters
    )
    text = render(
        "sshd_config.in",
        listen=listen,
        host_key=HOST_KEY,
        run_dir=RUN,
        trusted_user_ca_keys=TRUSTED_CA_KEYS,
        users=" ".join(p.name for p in layout.people),
        matches=matches,
    )
    write_if_changed(SSHD_CONFIG, text, 0o644)
    host_public = (SSH_DIR / "ssh_host_ed25519_key.pub").read_text().split()
    known = "".join(f"[127.0.0.1]:{c.ssh_port} {host_public[0]} {host_public[1]}\n" for c in layout.clusters)
    write_if_changed(KNOWN_HOSTS, known, 0o644)


# ---------------------------------------------------------------------------------------------------
# The daemons.


def munged() -> Daemon:
    def ready() -> bool:
        if not MUNGE_SOCKET.exists():
            return False
        cred = run(["munge", "-n", "-S", str(MUNGE_SOCKET)], check=False)
        if cred.returncode != 0:
            return False
        return run(["unmunge", "-S", str(MUNGE_SOCKET)], input_text=cred.stdout, check=False).returncode == 0

    return Daemon(
        name="munged",
        argv=[
            "munged",
            "--foreground",
            "--force",  # runs as root with its key under the repository
            f"--socket={MUNGE_SOCKET}",
            f"--key-file={MUNGE_KEY}",
            f"--pid-file={MUNGE_DIR / 'munged.pid'}",
            f"--seed-file={MUNGE_DIR / 'munged.seed'}",
            "--num-threads=4",
        ],
        env=base_env(),
        ready=ready,
        config=[MUNGE_KEY],
    )


def slurmdbd(cluster: Cluster) -> Daemon:
    return Daemon(
        name=f"{cluster.name}-slurmdbd",
        argv=["slurmdbd", "-D"],
        env=cluster.env(),
        ready=lambda: port_open(cluster.slurmdbd_port),
        config=[cluster.etc / "slurmdbd.conf", cluster.jwt_key],
        port=cluster.slurmdbd_port,
    )


def slurmctld(cluster: Cluster) -> Daemon:
    def ready() -> bool:
        ping = run(["scontrol", "ping"], env=cluster.env(), check=False, timeout=10)
        return ping.returncode == 0 and "UP" in ping.stdout

    return Daemon(
        name=f"{cluster.name}-slurmctld",
        argv=["slurmctld", "-D", "-i", "-f", str(cluster.slurm_conf)],
        env=cluster.env(),
        ready=ready,
        config=[cluster.slurm_conf, cluster.etc / "gres.conf", cluster.jwt_key],
        port=cluster.slurmctld_port,
    )


def slurmds(cluster: Cluster) -> list[Daemon]:
    return [
        Daemon(
            name=f"{cluster.name}-slurmd-{node}",
            argv=["slurmd", "-D", "-N", node, "-f", str(cluster.slurm_conf)],
            env=cluster.env(),
            ready=listening(cluster.slurmd_port(node)),
            config=[cluster.slurm_conf, cluster.etc / "gres.conf"],
            port=cluster.slurmd_port(node),
        )
        for node, _ in cluster.nodes
    ]


def slurmrestd(cluster: Cluster) -> Daemon:
    url = f"http://127.0.0.1:{cluster.slurmrestd_port}/slurm/v0.0.38/ping"

    def ready() -> bool:
        token = hs256_token(cluster.jwt_key.read_bytes(), "root")
        request = urllib.request.Request(url, headers={"X-SLURM-USER-NAME": "root", "X-SLURM-USER-TOKEN": token})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    return Daemon(
        name=f"{cluster.name}-slurmrestd",
        argv=[
            "slurmrestd",
            "-a",
            "rest_auth/jwt",
            "-s",
            ",".join(f"openapi/{v}" for v in OPENAPI_PLUGINS),
            f"127.0.0.1:{cluster.slurmrestd_port}",
        ],
        # SLURM_JWT=daemon: slurmrestd forwards each request's token instead of its own.
        env={**cluster.env(), "SLURM_JWT": "daemon", "HOME": "/"},
        ready=ready,
        config=[cluster.slurm_conf],
        user=REST_USER,
        port=cluster.slurmrestd_port,
    )


def sshd(layout: Layout) -> Daemon:
    return Daemon(
        name="sshd",
        argv=["/usr/sbin/sshd", "-D", "-f", str(SSHD_CONFIG), "-E", str(LOGS / "sshd-auth.log")],
        env=base_env(),
        ready=lambda: all(port_open(c.ssh_port) for c in layout.clusters),
        config=[SSHD_CONFIG, HOST_KEY],
        port=layout.clusters[0].ssh_port,
    )


def all_daemons(layout: Layout) -> list[Daemon]:
    daemons = [munged()]
    for cluster in layout.clusters:
        daemons += [slurmdbd(cluster), slurmctld(cluster), *slurmds(cluster)]
        if cluster.slurmrestd:
            daemons.append(slurmrestd(cluster))
    daemons.append(sshd(layout))
    return daemons


# ---------------------------------------------------------------------------------------------------
# Accounting: clusters, accounts and associations in each cluster's slurmdbd.


def register_accounting(cluster: Cluster) -> None:
    """Add what is missing (sacctmgr is slow: skipped when this exact set was registered before)."""
    wanted = json.dumps([cluster.name, cluster.accounts, sorted(cluster.users.items())])
    marker = cluster.root / "accounting.registered"
    if marker.exists() and marker.read_text() == wanted:
        return
    _register_accounting(cluster)
    marker.write_text(wanted)


def _register_accounting(cluster: Cluster) -> None:
    def sacctmgr(*args: str) -> str:
        return run(["sacctmgr", "--immediate", *args], env=cluster.env()).stdout

    clusters = sacctmgr("--noheader", "--parsable2", "list", "cluster", "format=cluster").split()
    if cluster.name not in clusters:
        sacctmgr("add", "cluster", cluster.name)
    rows = sacctmgr(
        "--noheader",
        "--parsable2",
        "list",
        "association",
        f"cluster={cluster.name}",
        "format=account,user",
    ).splitlines()
    accounts = {r.split("|")[0] for r in rows}
    pairs = {tuple(r.split("|")) for r in rows}
    missing = [a for a in cluster.accounts if a not in accounts]
    if missing:
        sacctmgr(
            "add",
            "account",
            ",".join(missing),
            f"cluster={cluster.name}",
            "description=test project",
            "organization=antenna",
        )
    for user, user_accounts in cluster.users.items():
        missing = [a for a in user_accounts if (a, user) not in pairs]
        if missing:
            # The first account becomes the default only when the user is new to the cluster.
            sacctmgr(
                "add",
                "user",
                user,
                f"account={','.join(missing)}",
                f"cluster={cluster.name}",
                f"defaultaccount={user_accounts[0]}",
            )


def nodes_idle(cluster: Cluster) -> bool:
    out = run(["sinfo", "--noheader", "--Node", "--format=%N %t"], env=cluster.env(), check=False)
    states = dict(line.split() for line in out.stdout.splitlines() if line.strip())
    expected = {n for n, _ in cluster.nodes}
    if set(states) != expected:
        return False
    stuck = [n for n, s in states.items() if s.rstrip("*~#!%$@^-") in {"down", "drain", "drng", "fail"}]
    if stuck:
        # A node left down by an earlier unclean stop: its slurmd is up now, so give it back.
        run(
            ["scontrol", "update", f"nodename={','.join(stuck)}", "state=resume"],
            env=cluster.env(),
            check=False,
        )
        return False
    return all(s in {"idle", "mix", "alloc"} for s in states.values())


# ---------------------------------------------------------------------------------------------------
# The description printed by `env`.


def describe(layout: Layout) -> dict[str, Any]:
    host_public = (SSH_DIR / "ssh_host_ed25519_key.pub").read_text().split()
    return {
        "version": ENV_VERSION,
        "stack_dir": str(STACK_DIR),
        "slurm_version": run(["sinfo", "--version"], env=layout.clusters[0].env()).stdout.split()[-1],
        "munge_socket": str(MUNGE_SOCKET),
        "log_dir": str(LOGS),
        "clusters": [
            {
                "name": c.name,
                "slurm_conf": str(c.slurm_conf),
                "slurmctld_port": c.slurmctld_port,
                "slurmdbd_port": c.slurmdbd_port,
                "slurmrestd_url": f"http://127.0.0.1:{c.slurmrestd_port}" if c.slurmrestd else None,
                "openapi_versions": list(OPENAPI_PLUGINS) if c.slurmrestd else [],
                "jwt_key": str(c.jwt_key),
                "ssh_port": c.ssh_port,
                "accounts": list(c.accounts),
                "nodes": [n for n, _ in c.nodes],
                "partitions": [
                    {
                        "name": p.name,
                        "default": p.default,
                        "exclusive": p.exclusive,
                        "max_time": p.max_time,
                        "max_nodes": p.max_nodes,
                        "nodes": list(p.node_type.nodes),
                        "cpus_per_node": p.node_type.cpus,
                        "memory_mb_per_node": p.node_type.memory_mb,
                        "gpus_per_node": p.node_type.gpus,
                        "gpu_type": p.node_type.gpu_type,
                        "def_mem_per_cpu_mb": p.def_mem_per_cpu_mb,
                    }
                    for p in c.partitions
                ],
            }
            for c in layout.clusters
        ],
        "ssh": {
            "host": "127.0.0.1",
            "ports": {c.name: c.ssh_port for c in layout.clusters},
            "host_key_type": host_public[0],
            "host_public_key": f"{host_public[0]} {host_public[1]}",
            "known_hosts": str(KNOWN_HOSTS),
            "trusted_user_ca_keys": str(TRUSTED_CA_KEYS),
            "ca_private_key": str(CA_KEY),
            "ca_public_key": str(CA_KEY.parent / "ca.pub"),
            "log": str(LOGS / "sshd-auth.log"),
        },
        "people": [
            {
                "name": p.name,
                "uid": pwd.getpwnam(p.name).pw_uid,
                "home": pwd.getpwnam(p.name).pw_dir,
                "accounts": {c: list(a) for c, a in p.accounts.items()},
            }
            for p in layout.people
        ],
    }


# ---------------------------------------------------------------------------------------------------
# The machine's services: PostgreSQL (the gateway's database in tests), MariaDB (slurmdbd's) and Redis (shared
# rate limits), on their usual loopback ports, as a developer's machine would run them.

SERVICES = STACK_DIR / "services"
SERVICE_PACKAGES = ("postgresql", "mariadb-server", "mariadb-client", "redis-server")
PG_PORT = 5432
PG_DATA = SERVICES / "postgresql"
PG_SOCKETS = Path("/var/run/postgresql")  # where Debian's clients look, so `psql -U postgres` works as usual
PG_TEST_DATABASE = "test"
MARIADB_DATA = SERVICES / "mariadb"
MARIADB_SOCKET = Path("/run/mysqld/mysqld.sock")  # the client's default in Debian's my.cnf
REDIS_PORT = 6379
REDIS_DATA = SERVICES / "redis"


def _owned_dir(path: Path, user: str, mode: int) -> None:
    entry = pwd.getpwnam(user)
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(mode)


def _postgres_bin(name: str) -> str:
    """The newest installed PostgreSQL's program (Debian keeps them under /usr/lib/postgresql/<major>/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parents[1].name))
    if not found:
        raise StackError(f"no {name} under /usr/lib/postgresql: is Debian's postgresql package installed?")
    return str(found[-1])


def _pg_answers() -> bool:
    probe = [_postgres_bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres"]
    return run(probe, check=False, timeout=10).returncode == 0


def init_postgresql() -> None:
    if not (PG_DATA / "PG_VERSION").exists():
        shutil.rmtree(PG_DATA, ignore_errors=True)  # a half-made cluster from an interrupted first start
        _owned_dir(PG_DATA, "postgres", 0o700)
        initdb = [_postgres_bin("initdb"), "-D", str(PG_DATA), "-U", "postgres", "--auth=trust", "--encoding=UTF8"]
        run(["runuser", "-u", "postgres", "--", *initdb, "--locale=C.UTF-8"], timeout=120)
        log(f"postgresql: new cluster in {PG_DATA}")
    _owned_dir(PG_SOCKETS, "postgres", 0o2775)


def postgresql() -> Daemon:
    argv = [_postgres_bin("postgres"), "-D", str(PG_DATA), "-p", str(PG_PORT)]
    for setting in [
        "listen_addresses=127.0.0.1",  # trust authentication: loopback only
        f"unix_socket_directories={PG_SOCKETS}",
        "max_connections=300",  # two-replica and pool tests open many at once
    ]:
        argv += ["-c", setting]
    return Daemon("postgresql", argv, base_env(), _pg_answers, user="postgres", port=PG_PORT)


def _mariadb_answers() -> bool:
    probe = ["mysql", "--no-defaults", "-h", MARIADB_HOST, "-P", str(MARIADB_PORT), "-u", "root", "-e", "SELECT 1"]
    return run(probe, check=False, timeout=10).returncode == 0


def init_mariadb() -> None:
    if not (MARIADB_DATA / "mysql").exists():
        shutil.rmtree(MARIADB_DATA, ignore_errors=True)
        _owned_dir(MARIADB_DATA, "mysql", 0o750)
        # root@localhost with an empty password ('normal'): the stack connects over TCP as root, as before.
        install = ["mariadb-install-db", "--no-defaults", "--user=mysql", f"--datadir={MARIADB_DATA}"]
        run([*install, "--auth-root-authentication-method=normal", "--skip-test-db"], timeout=180)
        log(f"mariadb: new data directory {MARIADB_DATA}")
    _owned_dir(MARIADB_SOCKET.parent, "mysql", 0o755)


def mariadb() -> Daemon:
    argv = [
        "/usr/sbin/mariadbd",
        "--no-defaults",
        "--user=mysql",
        f"--datadir={MARIADB_DATA}",
        f"--bind-address={MARIADB_HOST}",
        f"--port={MARIADB_PORT}",
        f"--socket={MARIADB_SOCKET}",
        f"--pid-file={MARIADB_DATA / 'mariadbd.pid'}",
        # What Slurm's accounting documentation asks of its database.
        "--innodb-buffer-pool-size=256M",
        "--innodb-lock-wait-timeout=900",
    ]
    return Daemon("mariadb", argv, base_env(), _mariadb_answers, port=MARIADB_PORT)


def redis() -> Daemon:
    argv = ["/usr/bin/redis-server", "--bind", "127.0.0.1", "--port", str(REDIS_PORT), "--dir", str(REDIS_DATA)]
    argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]  # counters only: nothing to keep
    return Daemon("redis", argv, base_env(), listening(REDIS_PORT), user="redis", port=REDIS_PORT)


def init_redis() -> None:
    _owned_dir(REDIS_DATA, "redis", 0o750)


def service_daemons() -> list[Daemon]:
    return [postgresql(), mariadb(), redis()]


def ensure_pg_database(name: str) -> None:
    psql = ["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", "-d", "postgres"]
    found = run([*psql, "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"]).stdout.strip()
    if not found:
        run([*psql, "-c", f'CREATE DATABASE "{name}"'])


def services_up() -> None:
    """Start PostgreSQL, MariaDB and Redis unless their ports already answer (the machine's own servers).

    The caller holds the stack's lock and has installed SERVICE_PACKAGES."""
    began = time.monotonic()
    for path in [PIDS, LOGS]:
        path.mkdir(parents=True, exist_ok=True)
    check_reachable_by_others()  # postgres, mysql and redis enter their data directories below it
    _owned_dir(SERVICES, "root", 0o755)
    started, reused = [], []
    daemons = []
    for daemon in service_daemons():
        if daemon.pid() is None and daemon.port is not None and port_open(daemon.port):
            reused.append(f"{daemon.name} (127.0.0.1:{daemon.port})")
            continue
        if daemon.pid() is None:
            {"postgresql": init_postgresql, "mariadb": init_mariadb, "redis": init_redis}[daemon.name]()
        if daemon.start():
            started.append(daemon.name)
        daemons.append(daemon)
    for daemon in daemons:
        daemon.wait_ready()
    ensure_pg_database(PG_TEST_DATABASE)
    parts = [f"started {', '.join(started)}" if started else ""]
    parts.append(f"using the machine's {', '.join(reused)}" if reused else "")
    done = "; ".join(p for p in parts if p) or "running"
    log(f"services: {done} ({time.monotonic() - began:.1f} s)")


def services() -> None:
    require_root()
    ensure_packages(SERVICE_PACKAGES)
    with locked():
        services_up()


# ---------------------------------------------------------------------------------------------------
# Commands.


@contextlib.contextmanager
def locked() -> Iterator[None]:
    STACK_DIR.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # two `up`s at once (parallel test runs) take turns
        yield


def phase(label: str, daemons: list[Daemon]) -> None:
    began = time.monotonic()
    started = start_all(daemons)
    done = f"started {', '.join(started)}" if started else "running"
    log(f"{label}: {done} ({time.monotonic() - began:.1f} s)")


def up(lease_pid: int | None = None) -> None:
    require_root()
    began = time.monotonic()
    layout = load_layout()
    ensure_packages(PACKAGES + SERVICE_PACKAGES)
    with locked():
        was_complete = all(d.pid() is not None for d in all_daemons(layout))
        check_reachable_by_others()
        refuse_foreign_daemons(layout)
        services_up()
        ensure_dirs(layout)
        ensure_people(layout)
        ensure_secret_file(MUNGE_KEY, 1024)
        ensure_ssh_keys()
        db_password = ensure_database(layout)
        for cluster in layout.clusters:
            write_cluster_config(cluster, db_password)
        write_sshd_config(layout)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        run(["/usr/sbin/sshd", "-t", "-f", str(SSHD_CONFIG)])

        phase("munge", [munged()])
        phase("slurmdbd", [slurmdbd(c) for c in layout.clusters])
        t = time.monotonic()
        with ThreadPoolExecutor() as pool:
            list(pool.map(register_accounting, layout.clusters))
        log(f"accounting registered ({time.monotonic() - t:.1f} s)")
        phase("slurmctld", [slurmctld(c) for c in layout.clusters])
        phase("slurmd", [d for c in layout.clusters for d in slurmds(c)])
        phase("slurmrestd", [slurmrestd(c) for c in layout.clusters if c.slurmrestd])
        phase("sshd", [sshd(layout)])
        t = time.monotonic()
        for cluster in layout.clusters:
            wait_until(f"{cluster.name}: nodes idle", functools.partial(nodes_idle, cluster))
        log(f"nodes idle ({time.monotonic() - t:.1f} s)")
        write_if_changed(DESCRIPTION, json.dumps(describe(layout), indent=2) + "\n", 0o644)
        take_lease(lease_pid, was_complete)
    log(f"stack up in {time.monotonic() - began:.1f} s; `tests/stack/stack env` describes it")


# Leases: test sessions that use the stack. The last one to leave stops it, but only if a test session
# started it; a stack started by hand (`up` without a lease) stays up.


def _live_leases() -> list[int]:
    live = []
    for path in LEASES.glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {}
        pid = record.get("pid")
        if isinstance(pid, int) and _alive(pid) and _start_time(pid) == record.get("start"):
            live.append(pid)
        else:
            path.unlink(missing_ok=True)
    return live


def take_lease(lease_pid: int | None, was_complete: bool) -> None:
    LEASES.mkdir(exist_ok=True)
    if lease_pid is None:
        STARTED_BY_TESTS.unlink(missing_ok=True)
        return
    if not was_complete and not _live_leases():
        STARTED_BY_TESTS.touch()
    record = {"pid": lease_pid, "start": _start_time(lease_pid)}
    (LEASES / f"{lease_pid}.json").write_text(json.dumps(record) + "\n")


def release(lease_pid: int, keep: bool) -> None:
    require_root()
    layout = load_layout()
    with locked():
        (LEASES / f"{lease_pid}.json").unlink(missing_ok=True)
        others = _live_leases()
        if others:
            log(f"left running: still used by test session(s) {', '.join(map(str, others))}")
        elif keep or not STARTED_BY_TESTS.exists():
            log("left running: it was started by hand or ANTENNA_STACK_KEEP=1")
        else:
            _down(layout)


def cancel_jobs(cluster: Cluster) -> None:
    """Cancel every job while slurmctld still runs, so that accounting records how they ended."""
    if slurmctld(cluster).pid() is None:
        return
    queue = run(["squeue", "--noheader", "--format=%i"], env=cluster.env(), check=False, timeout=10)
    jobs = queue.stdout.split()
    if not jobs:
        return
    run(["scancel", *jobs], env=cluster.env(), check=False, timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        queue = run(
            ["squeue", "--noheader", "--states=PD,R,CG,S,CF", "--format=%i"],
            env=cluster.env(),
            check=False,
            timeout=10,
        )
        if not queue.stdout.split():
            break
        time.sleep(0.2)
    log(f"{cluster.name}: cancelled {len(jobs)} job(s)")


def down() -> None:
    require_root()
    layout = load_layout()
    with locked():
        _down(layout)


def _down(layout: Layout) -> None:
    for cluster in layout.clusters:
        cancel_jobs(cluster)
    # Front ends first, munge last (the others talk through it while stopping); a tier at a time.
    for tier in ["sshd", "slurmrestd", "slurmd", "slurmctld", "slurmdbd", "munged"]:
        stopped = stop_daemons([d for d in all_daemons(layout) if d.kind == tier])
        if stopped:
            log(f"{tier}: stopped {', '.join(stopped)}")
    strays = _socket_holders()
    if strays:
        log(f"stopping {len(strays)} leftover process(es) of the stack")
        _terminate(sorted({d for pid in strays for d in [pid, *_descendants(pid)]}))
    DESCRIPTION.unlink(missing_ok=True)
    STARTED_BY_TESTS.unlink(missing_ok=True)
    log("stack down")


def stop(names: list[str]) -> None:
    """Stop single daemons (fault tests); `up` starts them again."""
    require_root()
    daemons = {d.name: d for d in all_daemons(load_layout())}
    unknown = [n for n in names if n not in daemons]
    if unknown:
        raise StackError(f"no daemon {', '.join(unknown)}; `status` lists them")
    with locked():
        stopped = stop_daemons([daemons[n] for n in names])
        log(f"stopped: {', '.join(stopped) or 'nothing was running'}")


def purge() -> None:
    """Down, then forget everything: state, keys, logs and the accounting databases."""
    down()
    layout = load_layout()
    mariadb_sql(
        "\n".join(
            [f"DROP DATABASE IF EXISTS `{c.db_name}`;" for c in layout.clusters]
            + [f"DROP USER IF EXISTS '{DB_USER}'@'{h}';" for h in ["localhost", "127.0.0.1"]]
        )
    )
    with locked():
        stopped = stop_daemons(service_daemons())
    if stopped:
        log(f"services: stopped {', '.join(stopped)}")
    shutil.rmtree(STACK_DIR, ignore_errors=True)
    log(f"purged {STACK_DIR} and the accounting databases")


def status() -> int:
    """The stack's daemons; the services are listed too but do not count (the machine's own may serve)."""
    for service in service_daemons():
        pid = service.pid()
        print(f"{service.name:32} {'running pid ' + str(pid) if pid else 'not started by the stack'}")
    layout = load_layout()
    daemons = all_daemons(layout)
    running = 0
    for daemon in daemons:
        pid = daemon.pid()
        running += pid is not None
        print(f"{daemon.name:32} {'running pid ' + str(pid) if pid else 'stopped'}")
    print(f"{running}/{len(daemons)} running")
    if running == len(daemons):
        return 0
    return 3 if running == 0 else 1


def env() -> int:
    if not DESCRIPTION.exists():
        print("the stack is not up: run `tests/stack/stack up`", file=sys.stderr)
        return 1
    sys.stdout.write(DESCRIPTION.read_text())
    return 0


def ssh(person: str, cluster_name: str, command: list[str]) -> int:
    """Log in as a test person with a fresh 1-hour certificate from the stack's CA (for manual use)."""
    layout = load_layout()
    cluster = next((c for c in layout.clusters if c.name == cluster_name), None)
    if cluster is None:
        raise StackError(f"no cluster {cluster_name!r}")
    keys = SSH_DIR / "people" / person
    keys.mkdir(parents=True, exist_ok=True)
    key = keys / "id_ed25519"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    run(["ssh-keygen", "-q", "-s", str(CA_KEY), "-I", f"stack-{person}", "-n", person, "-V", "+1h", f"{key}.pub"])
    argv = [
        "ssh",
        "-i",
        str(key),
        "-o",
        f"CertificateFile={key}-cert.pub",
        "-o",
        f"UserKnownHostsFile={KNOWN_HOSTS}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-p",
        str(cluster.ssh_port),
        f"{person}@127.0.0.1",
        "--",
        *command,
    ]
    return subprocess.call(argv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tests/stack/stack", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("services", help="install and start PostgreSQL, MariaDB and Redis on loopback (idempotent)")
    up_parser = sub.add_parser("up", help="install what is missing and start the stack (idempotent)")
    up_parser.add_argument("--lease-pid", type=int, help="a test session (pid) that uses the stack")
    release_parser = sub.add_parser("release", help="end a test session's lease; the last one stops it")
    release_parser.add_argument("--lease-pid", type=int, required=True)
    release_parser.add_argument("--keep", action="store_true", help="never stop the stack")
    sub.add_parser("down", help="stop every process of the stack; keep state and accounting")
    sub.add_parser("purge", help="down, then remove the state directory and accounting databases")
    sub.add_parser("status", help="which daemons run (exit 0 all, 1 some, 3 none)")
    stop_parser = sub.add_parser("stop", help="stop single daemons by name (see status)")
    stop_parser.add_argument("names", nargs="+")
    sub.add_parser("env", help="print the JSON description of the running stack")
    ssh_parser = sub.add_parser("ssh", help="run a command on a cluster's login node as a test person")
    ssh_parser.add_argument("person")
    ssh_parser.add_argument("cluster")
    ssh_parser.add_argument("remote", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.command == "services":
            services()
        elif args.command == "up":
            up(args.lease_pid)
        elif args.command == "release":
            release(args.lease_pid, args.keep)
        elif args.command == "down":
            down()
        elif args.command == "purge":
            purge()
        elif args.command == "stop":
            stop(args.names)
        elif args.command == "status":
            return status()
        elif args.command == "env":
            return env()
        elif args.command == "ssh":
            remote = args.remote[1:] if args.remote[:1] == ["--"] else args.remote
            return ssh(args.person, args.cluster, remote)
    except StackError as error:
        print(f"[stack] FAILED: {error}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

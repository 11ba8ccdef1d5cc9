"""Throwaway Debian hosts for applying the playbooks for real, without touching the machine running the tests.

A host is a debootstrap'd Debian 12 root (built once, cached under the repository's `var/throwaway/`), seen
through an overlay so the cache stays pristine, inside its own mount, PID, UTS and IPC namespaces: every
process it starts and every mount it makes dies with it, even when the test process is killed. Ansible
reaches it with the chroot connection, whose `chroot` command is replaced by `nsenter` into the namespaces.
It shares the machine's network (apt and pip need the registries), so inventories give services free ports.
Nothing runs systemd as PID 1 there (tini is); the roles use their init-script fallback.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import select
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VAR = REPO_ROOT / "var" / "throwaway"
SUITE = "bookworm"
MIRROR = os.environ.get("ANTENNA_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get("ANTENNA_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
# What a freshly installed Debian VM has that the roles rely on (python3-apt for Ansible's apt module), the
# systemd tools (to check the roles' units; systemd does not run), and tini to be the namespace's PID 1.
BASE_PACKAGES = ("python3", "python3-apt", "ca-certificates", "procps", "systemd", "tini")
BASE_LAYOUT = "2"  # bump when the base's preparation changes, so old caches are not reused
# This machine's own extra certificate authorities (e.g. of a TLS-inspecting egress proxy): the host gets
# them too, so that it reaches the package registries exactly as this machine does.
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
DEBOOTSTRAP_TIMEOUT = 900  # seconds: a first download of the base system on a slow mirror

# Runs inside the new namespaces as their PID 1: mounts the overlay and the pseudo-filesystems, then becomes
# tini in the chroot. Arguments: base, run dir, host name, pip cache.
_INIT = r"""
set -eu
base=$1; run=$2; name=$3; pip_cache=$4
root=$run/root
mount -t overlay overlay -o "lowerdir=$base,upperdir=$run/upper,workdir=$run/work" "$root"
mount -t proc proc "$root/proc"
mount -t sysfs -o ro sysfs "$root/sys"
mount -t tmpfs -o mode=755,nosuid tmpfs "$root/dev"
for dev in null zero full random urandom tty; do
    touch "$root/dev/$dev"
    mount --bind "/dev/$dev" "$root/dev/$dev"
done
mkdir -p "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mount -t tmpfs -o nosuid,nodev tmpfs "$root/dev/shm"
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$root/run"
mkdir -p "$root/root/.cache/pip"
mount --bind "$pip_cache" "$root/root/.cache/pip"
hostname "$name"
printf '%s\n' "$name" > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 %s.test %s\n' "$name" "$name" > "$root/etc/hosts"
cp /etc/resolv.conf "$root/etc/resolv.conf"
echo ready
exec chroot "$root" /usr/bin/tini -- sleep infinity </dev/null >/dev/null 2>&1
"""

_ENTER = """#!/bin/sh
# Ansible's chroot connection calls this as `chroot DIR COMMAND...`: enter the throwaway host instead, with
# the clean environment of a login on a remote host (nothing of this machine's variables leaks in).
shift
exec nsenter --target {pid} --mount --uts --ipc --pid --root --wd -- \\
    /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \\
    "$@"
"""


# Downloaded packages are kept for the next hosts. Each host has its own archive directory (apt locks it for a
# whole install, which would serialise hosts of concurrent test sessions): the .deb files are hard-linked in
# before it starts and back out after it stops. pip's cache is safe to share and is bind-mounted.
APT_CACHE = VAR / "cache" / "apt"
HOST_ARCHIVES = "var/cache/apt/archives"


def _share_debs(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for deb in source.glob("*.deb") if source.is_dir() else ():
        with contextlib.suppress(FileExistsError):
            os.link(deb, target / deb.name)


class ThrowawayHostError(RuntimeError):
    """The throwaway host could not be built or started; the message says why."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the host shares this machine's network)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(argv: list[str], *, timeout: float, log: Path | None = None) -> None:
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("ab")) if log else subprocess.DEVNULL
        try:
            subprocess.run(argv, check=True, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, FileNotFoundError) as exc:
            detail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise ThrowawayHostError(f"{argv[0]} failed: {exc}\n{detail}") from exc


def _ensure_debootstrap() -> None:
    if shutil.which("debootstrap"):
        return
    log = VAR / "apt.log"
    _run(["apt-get", "update"], timeout=300, log=log)
    env_install = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "debootstrap"]
    _run(env_install, timeout=300, log=log)


def ensure_base() -> Path:
    """The cached Debian root, built with debootstrap on first use (about a minute); shared by all hosts."""
    VAR.mkdir(parents=True, exist_ok=True)
    extra_cas = [path.read_bytes() for path in sorted(LOCAL_CAS.glob("*.crt"))]
    digest = hashlib.sha256("\n".join([SUITE, MIRROR, BASE_LAYOUT, *BASE_PACKAGES]).encode())
    for ca in extra_cas:
        digest.update(ca)
    key = digest.hexdigest()[:12]
    base = VAR / f"base-{key}"
    with (VAR / "base.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (base / ".antenna-base-ready").exists():
            return base
        _ensure_debootstrap()
        partial = VAR / f"base-{key}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        log = VAR / "debootstrap.log"
        log.unlink(missing_ok=True)
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(partial),
                MIRROR,
            ],
            timeout=DEBOOTSTRAP_TIMEOUT,
            log=log,
        )
        _prepare_base(partial)
        (partial / ".antenna-base-ready").write_text(key + "\n")
        partial.rename(base)
        for stale in VAR.glob("base-*"):
            if stale != base:  # an older layout or package list: never used again
                shutil.rmtree(stale, ignore_errors=True)
        return base


def _prepare_base(root: Path) -> None:
    (root / "etc/apt/sources.list").write_text(
        f"deb {MIRROR} {SUITE} main\ndeb {MIRROR} {SUITE}-updates main\ndeb {SECURITY_MIRROR} {SUITE}-security main\n"
    )
    (root / "etc/apt/apt.conf.d/90antenna-throwaway").write_text('Acquire::Languages "none";\n')
    # Packages must not start their daemons on install: they would take default ports (80, 9090...) on this
    # shared machine's network. The roles start every service themselves, with the inventory's ports.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    cas = sorted(LOCAL_CAS.glob("*.crt"))
    if cas:
        for ca in cas:
            shutil.copy2(ca, root / "usr/local/share/ca-certificates" / ca.name)
        _run(["chroot", str(root), "update-ca-certificates"], timeout=120, log=VAR / "debootstrap.log")


@dataclass
class ThrowawayHost:
    name: str
    run_dir: Path
    init_pid: int  # the namespaces' PID 1 as this machine sees it
    _unshare: subprocess.Popen[bytes]
    _pidfd: int

    @property
    def root(self) -> Path:
        """The host's filesystem, readable from here (through the init process' root)."""
        return Path(f"/proc/{self.init_pid}/root")

    @property
    def enter(self) -> Path:
        return self.run_dir / "enter"

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside the host (no shell)."""
        return subprocess.run([str(self.enter), "-", *argv], check=check, capture_output=True, text=True, timeout=120)

    def connection_vars(self) -> dict[str, str]:
        """Inventory variables that make Ansible reach this host."""
        return {
            "ansible_connection": "community.general.chroot",
            "ansible_host": str(self.root),
            "ansible_chroot_exe": str(self.enter),
            "ansible_python_interpreter": "/usr/bin/python3",
        }

    def close(self) -> None:
        # unshare's child (PID 1 in there) has a parent-death SIGKILL: killing unshare ends the namespaces,
        # every process in them, and their mounts.
        self._unshare.kill()
        self._unshare.communicate()
        ready, _, _ = select.select([self._pidfd], [], [], 60)
        os.close(self._pidfd)
        if not ready:
            raise ThrowawayHostError(f"the throwaway host {self.name} (pid {self.init_pid}) did not stop")
        _share_debs(self.run_dir / "upper" / HOST_ARCHIVES, APT_CACHE)
        shutil.rmtree(self.run_dir, ignore_errors=True)


@contextlib.contextmanager
def throwaway_host(name: str = "antenna-throwaway") -> Iterator[ThrowawayHost]:
    """A fresh host on the cached base; removed with everything it ran on exit."""
    base = ensure_base()
    run_dir = VAR / "runs" / f"{name}-{uuid.uuid4().hex[:8]}"
    pip_cache = VAR / "cache" / "pip"
    for directory in (run_dir / "upper", run_dir / "work", run_dir / "root", pip_cache):
        directory.mkdir(parents=True, exist_ok=True)
    _share_debs(APT_CACHE, run_dir / "upper" / HOST_ARCHIVES)
    argv = [
        # If this process dies, unshare dies, and with it (--kill-child) the namespaces.
        "setpriv",
        "--pdeathsig",
        "KILL",
        "unshare",
        "--mount",
        "--pid",
        "--uts",
        "--ipc",
        "--fork",
        "--kill-child",
        "sh",
        "-c",
        _INIT,
        "antenna-throwaway-init",
        str(base),
        str(run_dir),
        name,
        str(pip_cache),
    ]
    unshare = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert unshare.stdout is not None
    line = unshare.stdout.readline()
    if line.strip() != b"ready":
        unshare.kill()
        _, stderr = unshare.communicate()
        shutil.rmtree(run_dir, ignore_errors=True)
        raise ThrowawayHostError(f"the throwaway host did not start: {stderr.decode(errors='replace')}")
    children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children").read_text().split()
    init_pid = int(children[0])
    pidfd = os.pidfd_open(init_pid)
    enter = run_dir / "enter"
    enter.write_text(_ENTER.format(pid=init_pid))
    enter.chmod(0o755)
    host = ThrowawayHost(name=name, run_dir=run_dir, init_pid=init_pid, _unshare=unshare, _pidfd=pidfd)
    try:
        yield host
    finally:
        host.close()

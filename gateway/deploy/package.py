"""The gateway package the `gateway` role installs: a wheel built from the checkout, and its locked requirements.

Both come from uv (the tool the repository is managed with): `uv build --wheel` and `uv export` from uv.lock
with hashes, so a host gets exactly the versions the tests ran with and pip checks every download.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigurationError

UV_INSTALL_HINT = "install it with `python3 -m pip install --user uv` (see https://docs.astral.sh/uv/)"


@dataclass(frozen=True, slots=True)
class GatewayPackage:
    wheel: Path
    requirements: Path


def find_uv() -> str:
    """The uv executable: the one running us (`uv run` sets UV) or the first on PATH."""
    candidate = os.environ.get("UV") or shutil.which("uv")
    if not candidate or not Path(candidate).is_file():
        raise ConfigurationError(f"the `uv` command is needed to build the gateway package: {UV_INSTALL_HINT}")
    return candidate


def build_gateway_package(repo_root: Path, out_dir: Path) -> GatewayPackage:
    """Build the wheel and export the hash-pinned requirements into ``out_dir`` (replacing older ones)."""
    uv = find_uv()
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.whl"):
        old.unlink()
    requirements = out_dir / "requirements.txt"
    _run([uv, "build", "--wheel", "--out-dir", str(out_dir), "--quiet"], repo_root)
    _run(
        [
            uv,
            "export",
            "--frozen",
            "--no-default-groups",
            "--no-emit-project",
            "--extra",
            "server",
            "--format",
            "requirements-txt",
            "--output-file",
            str(requirements),
            "--quiet",
        ],
        repo_root,
    )
    wheels = sorted(out_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise ConfigurationError(f"`uv build` left {len(wheels)} wheels in {out_dir}, expected one")
    return GatewayPackage(wheel=wheels[0], requirements=requirements)


def _run(argv: list[str], cwd: Path) -> None:
    try:
        subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True)  # noqa: S603 - an argument list
    except subprocess.CalledProcessError as exc:
        raise ConfigurationError(
            f"`{' '.join(argv[1:3])}` failed while building the gateway package:\n{exc.stderr.strip()}"
        ) from exc

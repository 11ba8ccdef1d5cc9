"""The Vault policies of ``policies/vault/*.hcl``: a policy's name is its file's stem (``antenna-gateway``);
its paths can be rewritten for mounts and role names other than the defaults the files are written with,
and names given a prefix (tests use one to keep their policies apart on a shared server).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from gateway.secrets.settings import VaultClientOptions
from gateway.settings import VaultSettings

_PATH_LINE = re.compile(r'^(\s*path\s+")([^"]*)(")', re.MULTILINE)


@dataclass(frozen=True)
class PolicyContext:
    """Mount paths and names the policies refer to; the defaults are what the .hcl files say."""

    kv_mount: str = "antenna"
    ssh_mount: str = "ssh-client-signer"
    database_mount: str = "database"
    approle_mount: str = "approle"
    kubernetes_mount: str = "kubernetes"
    gateway_role: str = "antenna-gateway"  # the AppRole and Kubernetes role
    database_role: str = "antenna-gateway"
    prefix: str = ""

    @classmethod
    def from_settings(
        cls, settings: VaultSettings, options: VaultClientOptions | None = None, *, prefix: str = ""
    ) -> PolicyContext:
        options = options or VaultClientOptions()
        return cls(
            kv_mount=settings.kv_mount,
            ssh_mount=settings.ssh_mount,
            database_mount=settings.database_mount,
            approle_mount=options.approle_mount,
            kubernetes_mount=options.kubernetes_mount,
            gateway_role=options.approle_role,
            database_role=settings.database_role or cls.database_role,
            prefix=prefix,
        )

    def policy_name(self, stem: str) -> str:
        return f"{self.prefix}{stem}"

    def render_path(self, path: str) -> str:
        """``path`` (written for the defaults) for this context's mounts and names."""
        d = DEFAULTS
        secrets = {d.kv_mount: self.kv_mount, d.ssh_mount: self.ssh_mount, d.database_mount: self.database_mount}
        auths = {d.approle_mount: self.approle_mount, d.kubernetes_mount: self.kubernetes_mount}
        seg = path.split("/")

        def role(at: int) -> None:
            # <database mount>/creds|roles/<the gateway's database role>
            if (
                len(seg) > at + 2
                and seg[at] == self.database_mount
                and seg[at + 1] in ("creds", "roles")
                and seg[at + 2] == d.database_role
            ):
                seg[at + 2] = self.database_role

        if seg[0] in secrets:
            seg[0] = secrets[seg[0]]
            role(0)
        elif seg[0] == "auth" and len(seg) > 1 and seg[1] in auths:
            seg[1] = auths[seg[1]]
            if len(seg) > 3 and seg[2] == "role" and seg[3] == d.gateway_role:
                seg[3] = self.gateway_role
        elif seg[:2] == ["sys", "mounts"] and len(seg) > 2 and seg[2] in secrets:
            seg[2] = secrets[seg[2]]
        elif seg[:2] == ["sys", "auth"] and len(seg) > 2 and seg[2] in auths:
            seg[2] = auths[seg[2]]
        elif seg[:2] == ["sys", "leases"] and len(seg) > 3 and seg[3] in secrets:
            seg[3] = secrets[seg[3]]
            role(3)
        elif seg[:3] == ["sys", "policies", "acl"] and len(seg) > 3 and seg[3].startswith("antenna-"):
            seg[3] = self.prefix + seg[3]
        return "/".join(seg)

    def render(self, text: str) -> str:
        """The policy ``text`` with every ``path "..."`` rewritten by ``render_path``."""
        if self == DEFAULTS:
            return text
        return _PATH_LINE.sub(lambda m: m.group(1) + self.render_path(m.group(2)) + m.group(3), text)

    def with_prefix(self, prefix: str) -> PolicyContext:
        return replace(self, prefix=prefix)


DEFAULTS = PolicyContext()


def policy_files(policies_dir: Path) -> dict[str, Path]:
    """``{stem: file}`` of the ``*.hcl`` files, sorted by name."""
    return {path.stem: path for path in sorted(policies_dir.glob("*.hcl"))}


def load_policies(policies_dir: Path, context: PolicyContext = DEFAULTS) -> dict[str, str]:
    """``{policy name: rendered HCL}``, e.g. ``{"antenna-gateway": "..."}`` for the defaults."""
    return {
        context.policy_name(stem): context.render(path.read_text(encoding="utf-8"))
        for stem, path in policy_files(policies_dir).items()
    }

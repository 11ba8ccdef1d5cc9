"""Vault client options that ``VaultSettings`` does not carry yet (mounts, file locations, refresh policy).

Every field has a production default, so ``VaultClientOptions()`` is what a deployment gets unless the lead
folds these into ``VaultSettings``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

KUBERNETES_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 - a path


class VaultClientOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    approle_mount: str = "approle"
    approle_role: str = Field(
        default="antenna-gateway",
        description="the AppRole whose secret-id the deploy step wraps; the wrapping token's "
        "creation_path must be auth/<approle_mount>/role/<approle_role>/secret-id",
    )
    kubernetes_mount: str = "kubernetes"
    kubernetes_token_file: str = Field(default=KUBERNETES_TOKEN_FILE, description="the projected service-account token")
    token_file: str = Field(
        default="", description="auth_method=token only: a file holding the token (else VAULT_TOKEN)"
    )
    request_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    refresh_fraction: float = Field(
        default=2 / 3,
        gt=0,
        lt=1,
        description="renew tokens and refetch secrets once this fraction of their lifetime has passed",
    )
    fail_fast_seconds: float = Field(
        default=5.0,
        gt=0,
        description="after Vault is found sealed or unreachable, answer from cache (or 503) without "
        "asking it again for this long",
    )
    login_backoff_initial_seconds: float = Field(default=1.0, gt=0)
    login_backoff_max_seconds: float = Field(default=300.0, gt=0)
    ssh_cert_ttl_seconds: int = Field(default=600, ge=60, description="asked of Vault; the site's SSH role caps it")

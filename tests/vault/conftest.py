"""Fixtures of the secrets tests: the anyio backend and a namespaced setup on the session's OpenBao."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.openbao import OpenBao
from tests.vault.support import VaultEnv, make_env


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def vault_env(openbao: OpenBao, tmp_path: Path) -> VaultEnv:
    """A bootstrapped, namespaced Antenna setup on the session's OpenBao, with a wrapped secret-id ready."""
    return make_env(openbao, tmp_path)

"""Fixtures of the secrets tests: the anyio backend and a namespaced setup on the session's OpenBao."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.openbao import OpenBao
from tests.vault.support import OwnOpenBao, VaultEnv, make_env, start_own_openbao


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def vault_env(openbao: OpenBao, tmp_path: Path) -> VaultEnv:
    """A bootstrapped, namespaced Antenna setup on the session's OpenBao, with a wrapped secret-id ready."""
    return make_env(openbao, tmp_path)


@pytest.fixture(scope="session")
def own_openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnOpenBao]:
    """An OpenBao of these tests only: sealed and paused by the fault tests, default names for the CLI."""
    yield from start_own_openbao(tmp_path_factory.mktemp("own-openbao"))

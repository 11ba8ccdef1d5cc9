"""Fixtures of the secrets tests: the anyio backend; Vault fixtures live in tests/vault/support.py."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

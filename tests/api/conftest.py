"""Fixtures of the HTTP-level tests: a seeded gateway per test (see harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.api.harness import Gateway, open_gateway
from tests.support.idp import LoopbackIdP


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def gw(tmp_path: Path, test_idp: LoopbackIdP) -> AsyncIterator[Gateway]:
    async with open_gateway(tmp_path, test_idp) as gateway:
        yield gateway


@pytest.fixture
async def bare_gw(tmp_path: Path, test_idp: LoopbackIdP) -> AsyncIterator[Gateway]:
    """A gateway with no allocations or account mappings."""
    async with open_gateway(tmp_path, test_idp, seed=False) as gateway:
        yield gateway

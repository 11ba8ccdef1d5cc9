"""Connector tests run against the real Slurm stack (tests/stack)."""

import pytest

from tests.stack.plugin import slurm_stack  # noqa: F401


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

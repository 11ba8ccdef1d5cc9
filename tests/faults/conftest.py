"""Fault tests run against the real Slurm stack (tests/stack) and the real PostgreSQL."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

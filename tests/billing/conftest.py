"""The shipped example configuration, loaded once: the billing tests price with exactly what ships."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "sites.example.yaml"


def load_example() -> Settings:
    return load_settings(EXAMPLE)


@pytest.fixture(scope="session")
def example() -> Settings:
    return load_example()

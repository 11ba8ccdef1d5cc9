"""A replay of Keycloak's admin API per test (a real loopback HTTP server; no Keycloak runs here)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from keycloak import KeycloakAdmin

from gateway.realm import connect_admin
from tests.realm.keycloak_replay import CLIENT_ID, CLIENT_SECRET, Replay, serve


@pytest.fixture
def replay() -> Iterator[Replay]:
    with serve() as served:
        yield served


@pytest.fixture
def admin(replay: Replay) -> KeycloakAdmin:
    return connect_admin(replay.url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)

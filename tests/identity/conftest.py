"""Fixtures for the identity tests: a loopback IdP on a fake clock, and a verifier trusting it."""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.clock import FakeClock
from gateway.identity import KeySetCache, TokenVerifier
from gateway.settings import OIDCSettings
from tests.support.idp import LoopbackIdP


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def idp(test_idp: LoopbackIdP, clock: FakeClock) -> LoopbackIdP:
    """The test IdP minting tokens on the same fake clock the verifier and key cache read."""
    test_idp.clock = clock
    return test_idp


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()  # loading the CA store costs ~0.1 s; once is enough


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=_tls_context()) as client:
        yield client


@pytest.fixture
def oidc(idp: LoopbackIdP) -> OIDCSettings:
    return idp.oidc_settings(jwks_cache_seconds=300, jwks_refetch_cooldown_seconds=30, jwks_stale_seconds=600)


@pytest.fixture
def keys(oidc: OIDCSettings, http: httpx.AsyncClient, clock: FakeClock) -> KeySetCache:
    return KeySetCache.from_settings(oidc, http=http, clock=clock)


@pytest.fixture
def verifier(oidc: OIDCSettings, keys: KeySetCache, clock: FakeClock) -> TokenVerifier:
    return TokenVerifier(oidc, keys=keys, clock=clock)

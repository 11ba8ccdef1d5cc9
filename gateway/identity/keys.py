"""The issuer's signing keys: a cached, rate-limited view of its JWKS, and a static source for dev.

Keys come only from the JWKS named by the configured issuer's own discovery document. A fresh set is
reused for ``cache_seconds``; an unknown ``kid`` refetches at most once per cooldown window, one fetch
shared by every waiting request (while it runs, the keys at hand keep serving); while the issuer is
unreachable the last good set keeps serving for ``stale_seconds`` past its normal refresh; a successful
refresh replaces the set, so removed keys stop working.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from gateway.clock import Clock
from gateway.errors import InvalidToken
from gateway.settings import OIDCSettings

log = logging.getLogger(__name__)

# The only algorithms a key may be bound to; HS* and "none" can never verify a token here.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class KeySource(Protocol):
    """Where the verifier gets the public key for a ``kid``."""

    async def key(self, kid: str) -> PyJWK:
        """The key for ``kid``; raises InvalidToken (reason ``unknown_kid`` or ``keys_unavailable``)."""
        ...

    def ready(self) -> bool:
        """Whether keys are at hand to verify tokens now (for ``/readyz``)."""
        ...

    async def warm(self) -> bool:
        """Load the keys if they are due (bounded by any refetch cooldown); return ``ready()``."""
        ...


def keys_from_jwks(jwks: Mapping[str, Any]) -> dict[str, PyJWK]:
    """The usable signing keys of a JWKS document by ``kid``; other entries are skipped."""
    entries = jwks.get("keys")
    keys: dict[str, PyJWK] = {}
    if not isinstance(entries, list):
        return keys
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or entry.get("kty") == "oct":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or kid in keys:
            continue
        try:
            key = PyJWK(entry)
        except PyJWTError as exc:
            log.info("skipping unusable key %r in the key set: %s", kid[:64], exc)
            continue
        if key.algorithm_name in ASYMMETRIC_ALGORITHMS:
            keys[kid] = key
    return keys


def _unknown_kid(kid: str) -> InvalidToken:
    return InvalidToken(f"no key {kid[:64]!r} in the issuer's key set", reason="unknown_kid")


class StaticKeySource:
    """A fixed key set held in memory: the development issuer's, and the fake for unit tests."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._keys = keys_from_jwks(jwks)

    async def key(self, kid: str) -> PyJWK:
        try:
            return self._keys[kid]
        except KeyError:
            raise _unknown_kid(kid) from None

    def ready(self) -> bool:
        return bool(self._keys)

    async def warm(self) -> bool:
        return self.ready()


class _FetchFailed(Exception):
    pass


class KeySetCache:
    """The issuer's JWKS over HTTP (discovery → ``jwks_uri``), cached and fetched without blocking.

    ``fetch_count`` and ``fetch_outcomes`` count fetch attempts (outcome ``ok`` or ``error``);
    ``on_fetch(outcome)`` is called after each, e.g. to increment a metric.
    """

    def __init__(
        self,
        issuer: str,
        *,
        http: httpx.AsyncClient,
        clock: Clock,
        cache_seconds: float = 300,
        refetch_cooldown_seconds: float = 30,
        stale_seconds: float = 3600,
        timeout_seconds: float = 5.0,
        on_fetch: Callable[[str], None] | None = None,
    ) -> None:
        self.issuer = issuer
        self._http = http
        self._clock = clock
        self._cache = timedelta(seconds=cache_seconds)
        self._cooldown = timedelta(seconds=refetch_cooldown_seconds)
        self._stale = timedelta(seconds=stale_seconds)
        self._timeout = timeout_seconds
        self._on_fetch = on_fetch
        self._lock = asyncio.Lock()
        self._refreshing: asyncio.Task[None] | None = None
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: datetime | None = None
        self._last_attempt: datetime | None = None
        self._last_ok = False
        self.fetch_count = 0
        self.fetch_outcomes: Counter[str] = Counter()

    @classmethod
    def from_settings(
        cls,
        oidc: OIDCSettings,
        *,
        http: httpx.AsyncClient,
        clock: Clock,
        on_fetch: Callable[[str], None] | None = None,
    ) -> KeySetCache:
        return cls(
            oidc.issuer,
            http=http,
            clock=clock,
            cache_seconds=oidc.jwks_cache_seconds,
            refetch_cooldown_seconds=oidc.jwks_refetch_cooldown_seconds,
            stale_seconds=oidc.jwks_stale_seconds,
            timeout_seconds=oidc.http_timeout_seconds,
            on_fetch=on_fetch,
        )

    async def key(self, kid: str) -> PyJWK:
        now = self._clock.now()
        key = self._keys.get(kid)
        # While a refresh of an aged set is under way (a request's, or readiness's), its keys keep serving.
        if key is not None and (self._fresh(now) or (self._lock.locked() and self.ready())):
            return key
        # A fetch already under way may bring an unknown kid: wait for it rather than refuse.
        if self._may_fetch(now) or self._lock.locked():
            await asyncio.shield(self._start_refresh())
        if not self.ready():
            raise InvalidToken("the issuer's key set is unavailable", reason="keys_unavailable")
        try:
            return self._keys[kid]
        except KeyError:
            raise _unknown_kid(kid) from None

    def ready(self) -> bool:
        """True while a key set is at hand that is fresh or within its stale allowance."""
        return self._fetched_at is not None and self._clock.now() < self._fetched_at + self._cache + self._stale

    async def warm(self) -> bool:
        """Fetch the key set now if it is due (subject to the cooldown); return ``ready()``. A caller that
        stops waiting (a bounded readiness check) leaves the fetch running for the next one."""
        if self._may_fetch(self._clock.now()) or self._lock.locked():
            await asyncio.shield(self._start_refresh())
        return self.ready()

    def _start_refresh(self) -> asyncio.Task[None]:
        """The refresh under way, or a new one: one fetch at a time, shared by everyone who waits."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh(), name="antenna-jwks-refresh")
        return self._refreshing

    def _fresh(self, now: datetime) -> bool:
        return self._fetched_at is not None and now < self._fetched_at + self._cache

    def _may_fetch(self, now: datetime) -> bool:
        if self._last_attempt is None:
            return True
        if self._last_ok and not self._fresh(now):
            return True  # the routine refresh of a set that has aged out
        return now >= self._last_attempt + self._cooldown

    async def _refresh(self) -> None:
        async with self._lock:
            # Whoever held the lock before us may have just fetched: one fetch serves the whole burst.
            if not self._may_fetch(self._clock.now()):
                return
            self._last_attempt = self._clock.now()
            try:
                keys = await self._fetch()
            except _FetchFailed as exc:
                self._last_ok = False
                self._count("error")
                log.warning("fetching the key set of %s failed: %s", self.issuer, exc)
                return
            self._keys = keys
            self._fetched_at = self._clock.now()
            self._last_ok = True
            self._count("ok")

    def _count(self, outcome: str) -> None:
        self.fetch_count += 1
        self.fetch_outcomes[outcome] += 1
        if self._on_fetch is not None:
            self._on_fetch(outcome)

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url, timeout=self._timeout, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise _FetchFailed(f"{url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise _FetchFailed(f"{url}: HTTP {response.status_code}")
        try:
            document = response.json()
        except ValueError as exc:
            raise _FetchFailed(f"{url}: not JSON") from exc
        if not isinstance(document, dict):
            raise _FetchFailed(f"{url}: not a JSON object")
        return document

    async def _fetch(self) -> dict[str, PyJWK]:
        discovery = await self._get_json(f"{self.issuer.rstrip('/')}/.well-known/openid-configuration")
        if discovery.get("issuer") != self.issuer:
            raise _FetchFailed("the discovery document names another issuer")
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str) or urlsplit(jwks_uri).scheme not in ("http", "https"):
            raise _FetchFailed("the discovery document has no usable jwks_uri")
        if urlsplit(self.issuer).scheme == "https" and urlsplit(jwks_uri).scheme != "https":
            raise _FetchFailed("an https issuer must serve its key set over https")
        keys = keys_from_jwks(await self._get_json(jwks_uri))
        if not keys:
            raise _FetchFailed("the key set holds no usable signing key")
        return keys

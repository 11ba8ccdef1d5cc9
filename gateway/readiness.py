"""What ``/readyz`` answers, kept by a background loop: the probe reads state and never waits on a dependency.

Every few seconds the database, the issuer's key set and the secrets store are checked concurrently, each
bounded well below the probe's timeout (3 s in the shipped manifest). A slow issuer or Vault while the
cached keys and secrets are still valid is "degraded", not "not ready": taking every replica out of
service at once would turn a slow Keycloak into an outage. Where the loop does not run (a process that has
not started its background tasks) or its state has gone stale, the probe runs one bounded round itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.db import Database
from gateway.errors import AntennaError
from gateway.identity import KeySource
from gateway.secrets import SecretStore
from gateway.supervision import Supervisor

CHECK_SECONDS = 1.0  # each check's bound: three run at once, far below a 3 s probe timeout
INTERVAL_SECONDS = 5.0


@dataclass
class Snapshot:
    ready: bool = False
    checks: dict[str, str] = field(default_factory=dict)
    at: float | None = None  # monotonic time of the round


class Readiness:
    def __init__(
        self,
        *,
        db: Database,
        keys: KeySource,
        secrets: SecretStore,
        supervisor: Supervisor,
        check_seconds: float = CHECK_SECONDS,
        interval_seconds: float = INTERVAL_SECONDS,
    ) -> None:
        self.db = db
        self.keys = keys
        self.secrets = secrets
        self.supervisor = supervisor
        self.check_seconds = check_seconds
        self.interval_seconds = interval_seconds
        self.snapshot = Snapshot()
        self.kept = False  # whether run_forever keeps the snapshot
        self._round: asyncio.Task[Snapshot] | None = None

    async def current(self) -> Snapshot:
        """The last round's answer, or a bounded round now when there is none recent."""
        at = self.snapshot.at
        if not self.kept or at is None or time.monotonic() - at > 3 * self.interval_seconds:
            return await self.refresh()
        return self.snapshot

    async def refresh(self) -> Snapshot:
        if self._round is None or self._round.done():  # one round at a time, shared by whoever asks
            self._round = asyncio.create_task(self._check_all())
        return await asyncio.shield(self._round)

    async def _check_all(self) -> Snapshot:
        database, keys, secrets = await asyncio.gather(self._database(), self._keys(), self._secrets())
        checks = {"database": database, "keys": keys, "secrets": secrets}
        ready = database == "ok" and not keys.startswith("not")
        self.snapshot = Snapshot(ready, checks, time.monotonic())
        return self.snapshot

    async def _bounded(self, check: Callable[[], Awaitable[object]]) -> object:
        return await asyncio.wait_for(check(), timeout=self.check_seconds)

    async def _database(self) -> str:
        try:
            await self._bounded(
                lambda: asyncio.to_thread(self.db.run, lambda s: s.connection().exec_driver_sql("SELECT 1").scalar())
            )
        except TimeoutError:
            return f"error: no answer within {self.check_seconds:g} s"
        except Exception as exc:  # readiness reports any failure as text
            return f"error: {type(exc).__name__}"
        return "ok"

    async def _keys(self) -> str:
        # Warming here, not only on a token's arrival: a replica that started while the issuer was away gets
        # no traffic until it is ready, so waiting for a request to fetch the keys would keep it out for good.
        try:
            loaded = await self._bounded(self.keys.warm)
        except Exception as exc:  # the fetch goes on in the background; the cached keys decide
            slow = isinstance(exc, TimeoutError)
            why = f"did not answer within {self.check_seconds:g} s" if slow else f"failed ({type(exc).__name__})"
            if self.keys.ready():
                return f"degraded: the issuer {why}; cached keys serve"
            return f"not loaded: the issuer {why}"
        return "ok" if loaded else "not loaded"

    async def _secrets(self) -> str:
        # Degraded, not unready: reads and cached credentials still work, and taking every replica out of
        # service during a Vault outage would turn a partial outage into a total one.
        try:
            await self._bounded(self.secrets.check)
        except TimeoutError:
            return f"degraded: Vault did not answer within {self.check_seconds:g} s"
        except AntennaError as exc:
            return f"degraded: {exc.detail}"
        except Exception as exc:  # readiness reports any failure as text, never a 500
            return f"degraded: {type(exc).__name__}"
        return "ok"

    async def run_forever(self, stop: asyncio.Event) -> None:
        self.kept = True
        try:
            while not stop.is_set():
                await self.refresh()
                self.supervisor.beat("readiness")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.interval_seconds)
        finally:
            self.kept = False

"""The process's background loops, supervised: a loop that fails is logged, backed off and started again,
and one that keeps failing makes the process not ready, so an orchestrator notices instead of a forwarder
that stopped silently while ``/readyz`` stayed green.

A loop reports each round it completes (``beat``) and each it could not (``failed``): a loop that catches its
own errors and goes on (the forwarder while the database is down) is as visible as one that crashed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("antenna.supervision")


@dataclass
class LoopState:
    failures: int = 0  # consecutive failed rounds (or crashes)
    last_error: str = ""


class Supervisor:
    def __init__(
        self,
        stop: asyncio.Event,
        *,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        unready_after: int = 3,
    ) -> None:
        self.stop = stop
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.unready_after = unready_after
        self.loops: dict[str, LoopState] = {}

    def register(self, name: str) -> LoopState:
        return self.loops.setdefault(name, LoopState())

    def beat(self, name: str) -> None:
        state = self.register(name)
        if state.failures:
            log.info("background loop recovered", extra={"loop": name, "after_failures": state.failures})
        state.failures, state.last_error = 0, ""

    def failed(self, name: str, exc: BaseException) -> float:
        """Record a failed round; returns how long to back off before the next."""
        state = self.register(name)
        state.failures += 1
        state.last_error = f"{type(exc).__name__}: {exc}"[:300]
        level = logging.ERROR if state.failures >= self.unready_after else logging.WARNING
        log.log(level, "background loop failed", extra={"loop": name, "failures": state.failures}, exc_info=exc)
        return float(min(self.backoff_max, self.backoff_base * 2 ** (state.failures - 1)))

    def spawn(self, name: str, loop: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run ``loop`` until stop; started again after it raises or returns early."""
        self.register(name)
        return asyncio.create_task(self._supervise(name, loop), name=f"antenna-{name}")

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        while not self.stop.is_set():
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: logged, backed off, started again
                wait = self.failed(name, exc)
            else:
                if self.stop.is_set():
                    return
                wait = self.failed(name, RuntimeError("ended before the process stopped"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=wait)

    def problems(self) -> dict[str, str]:
        """The loops that cannot run: ``unready_after`` failures in a row, each with its last error."""
        return {
            name: f"failing ({state.failures} in a row): {state.last_error}"
            for name, state in self.loops.items()
            if state.failures >= self.unready_after
        }

"""Per-site health with a circuit breaker, so a site that is down is not hammered."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.clock import Clock


@dataclass
class _Circuit:
    failures: int = 0
    open_until: float = 0.0
    last_error: str = ""


class SiteHealth:
    """Closed → open after ``threshold`` consecutive failures; after ``cooldown`` one call may try again."""

    def __init__(self, clock: Clock, *, threshold: int = 3, cooldown_seconds: float = 30.0) -> None:
        self.clock = clock
        self.threshold = threshold
        self.cooldown = cooldown_seconds
        self._circuits: dict[str, _Circuit] = {}

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def _get(self, site: str) -> _Circuit:
        return self._circuits.setdefault(site, _Circuit())

    def allows(self, site: str) -> bool:
        """May we call the site now? False while its circuit is open."""
        return self._now() >= self._get(site).open_until

    def is_up(self, site: str) -> bool:
        return self._get(site).failures < self.threshold

    def last_error(self, site: str) -> str:
        return self._get(site).last_error

    def success(self, site: str) -> None:
        circuit = self._get(site)
        circuit.failures, circuit.open_until, circuit.last_error = 0, 0.0, ""

    def failure(self, site: str, error: str, *, retry_after: float = 0.0) -> None:
        circuit = self._get(site)
        circuit.failures += 1
        circuit.last_error = error[:300]
        if circuit.failures >= self.threshold:
            circuit.open_until = self._now() + self.cooldown
        if retry_after:  # the site asked us to wait (e.g. Slurm's rate limit answering 429)
            circuit.open_until = max(circuit.open_until, self._now() + retry_after)

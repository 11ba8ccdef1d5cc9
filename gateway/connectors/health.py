"""Per-site health with a circuit breaker, so a site that is down (or asks us to slow down) is not hammered.

closed → open after ``threshold`` consecutive failures; once the cooldown has passed the circuit is
half-open and exactly ONE call (``acquire``) may probe the site: success closes it, failure opens it again
with a doubled cooldown (up to ``max_cooldown_seconds``). A site's rate limit (429 with Retry-After) opens
the circuit for that long without counting as a failure, and is also left through a single probe, so the
calls held back never resume all at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.clock import Clock
from gateway.errors import SiteUnavailable


def rate_limit_wait(exc: BaseException) -> float:
    """Seconds the site asked us to wait when ``exc`` is its rate limit (a 429), else 0."""
    if isinstance(exc, SiteUnavailable) and exc.extra.get("rate_limited"):
        return float(exc.retry_after)
    return 0.0


@dataclass
class _Circuit:
    failures: int = 0
    open_until: float = 0.0  # open after failures: no call before this (epoch seconds)
    throttled_until: float = 0.0  # the site asked us to wait until then
    cooldown: float = 0.0  # the current cooldown, doubled on each failed probe
    gated: bool = False  # open or throttled: the next call is a single probe
    probe_until: float = 0.0  # a probe is in flight until then (presumed lost after)
    last_error: str = ""

    def closed_at(self) -> float:
        return max(self.open_until, self.throttled_until)


class SiteHealth:
    def __init__(
        self,
        clock: Clock,
        *,
        threshold: int = 3,
        cooldown_seconds: float = 30.0,
        max_cooldown_seconds: float = 300.0,
    ) -> None:
        self.clock = clock
        self.threshold = threshold
        self.cooldown = cooldown_seconds
        self.max_cooldown = max(max_cooldown_seconds, cooldown_seconds)
        self._circuits: dict[str, _Circuit] = {}

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def _get(self, site: str) -> _Circuit:
        return self._circuits.setdefault(site, _Circuit())

    def allows(self, site: str) -> bool:
        """Could a call go to the site now? False while open, throttled, or while its one probe is out."""
        circuit, now = self._get(site), self._now()
        return not circuit.gated or (now >= circuit.closed_at() and now >= circuit.probe_until)

    def half_open(self, site: str) -> bool:
        """The next call is a probe: callers should send one, not a batch."""
        return self._get(site).gated

    def acquire(self, site: str) -> bool:
        """Take the right to call the site now. When half-open only one caller gets it until it reports back."""
        circuit, now = self._get(site), self._now()
        if not circuit.gated:
            return True
        if now < circuit.closed_at() or now < circuit.probe_until:
            return False
        circuit.probe_until = now + max(self.cooldown, 1.0)
        return True

    def retry_at(self, site: str) -> float:
        """When a call held back by the circuit should be tried again (epoch seconds)."""
        circuit = self._get(site)
        return max(circuit.closed_at(), circuit.probe_until, self._now())

    def is_up(self, site: str) -> bool:
        return self._get(site).failures < self.threshold

    def last_error(self, site: str) -> str:
        return self._get(site).last_error

    def success(self, site: str) -> None:
        circuit, now = self._get(site), self._now()
        circuit.failures, circuit.open_until, circuit.cooldown, circuit.probe_until = 0, 0.0, 0.0, 0.0
        if now < circuit.throttled_until:
            return  # a call sent before the site throttled us: the throttle holds, then one probe
        circuit.throttled_until, circuit.gated, circuit.last_error = 0.0, False, ""

    def failure(self, site: str, error: str, *, retry_after: float = 0.0) -> None:
        """A call failed because the site is unavailable. ``retry_after`` > 0: it was a rate limit."""
        if retry_after:
            self.throttle(site, retry_after, error)
            return
        circuit, now = self._get(site), self._now()
        probed, circuit.probe_until = circuit.probe_until > 0, 0.0
        circuit.failures += 1
        circuit.last_error = error[:300]
        if circuit.failures < self.threshold:
            return
        if not circuit.gated or circuit.cooldown == 0:
            circuit.cooldown = self.cooldown
            circuit.open_until = now + circuit.cooldown
            circuit.gated = True
        elif probed:  # the probe failed: wait longer before the next one
            circuit.cooldown = min(self.max_cooldown, circuit.cooldown * 2)
            circuit.open_until = now + circuit.cooldown
        # else: a call sent before the circuit opened failed too; it is open already

    def throttle(self, site: str, seconds: float, reason: str) -> None:
        """The site asked us to wait (e.g. Slurm's rate limit answering 429): no call for ``seconds``."""
        circuit, now = self._get(site), self._now()
        circuit.throttled_until = max(circuit.throttled_until, now + seconds)
        circuit.probe_until = 0.0
        circuit.gated = True
        circuit.last_error = reason[:300]

"""The per-site circuit breaker on a clock the test moves: when calls may go to a site, and how many."""

from __future__ import annotations

from gateway.clock import FakeClock
from gateway.connectors.health import SiteHealth, rate_limit_wait
from gateway.errors import SiteUnavailable


def breaker(**options: float) -> tuple[SiteHealth, FakeClock]:
    clock = FakeClock()
    return SiteHealth(clock, threshold=3, cooldown_seconds=30, **options), clock


def test_the_circuit_opens_after_the_threshold_and_lets_one_probe_through_after_the_cooldown() -> None:
    health, clock = breaker()
    for _ in range(2):
        health.failure("lumi", "down")
    assert health.is_up("lumi")
    assert health.acquire("lumi")
    health.failure("lumi", "down")
    assert not health.is_up("lumi")
    assert not health.allows("lumi")
    assert not health.acquire("lumi")
    clock.advance(30)
    assert health.allows("lumi")
    assert health.half_open("lumi")
    assert health.acquire("lumi")  # the probe
    assert not health.acquire("lumi")  # nobody else while it is out
    assert not health.allows("lumi")
    health.success("lumi")
    assert health.is_up("lumi")
    assert not health.half_open("lumi")
    assert [health.acquire("lumi") for _ in range(5)] == [True] * 5


def test_a_failed_probe_doubles_the_cooldown_but_late_failures_of_one_wave_do_not() -> None:
    health, clock = breaker(max_cooldown_seconds=100)
    for _ in range(8):  # eight calls that were in flight together all fail
        health.failure("lumi", "down")
    clock.advance(30)
    assert health.acquire("lumi")  # the wave opened the circuit for 30 s, not 30 × 2⁵
    health.failure("lumi", "still down")
    clock.advance(59)
    assert not health.allows("lumi")
    clock.advance(1)
    assert health.acquire("lumi")
    health.failure("lumi", "still down")
    clock.advance(100)  # capped at max_cooldown_seconds
    assert health.acquire("lumi")
    assert health.last_error("lumi") == "still down"


def test_a_rate_limit_holds_calls_back_for_retry_after_without_marking_the_site_down() -> None:
    health, clock = breaker()
    limited = SiteUnavailable("lumi: rate limited", retry_after=5, rate_limited=True)
    assert rate_limit_wait(limited) == 5
    assert rate_limit_wait(SiteUnavailable("lumi: down")) == 0  # an outage is not a rate limit
    health.failure("lumi", limited.detail, retry_after=rate_limit_wait(limited))
    assert health.is_up("lumi")
    assert not health.acquire("lumi")
    health.success("lumi")  # an answer to a call sent before the 429 does not lift the throttle
    assert not health.acquire("lumi")
    clock.advance(5)
    assert health.acquire("lumi")  # one probe after Retry-After ...
    assert not health.acquire("lumi")  # ... not everything that was held back
    health.success("lumi")
    assert health.acquire("lumi")
    assert health.acquire("lumi")


def test_sites_have_separate_circuits() -> None:
    health, _ = breaker()
    for _ in range(3):
        health.failure("lumi", "down")
    assert not health.acquire("lumi")
    assert health.acquire("lucia")
    assert health.is_up("lucia")

"""Counters and gauges of the secrets store, kept as plain values the metrics module can export.

Labels are drawn from fixed sets (event names and ``Reason`` values), never from secrets or free text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from enum import StrEnum


class Event(StrEnum):
    LOGIN = "login"
    LOGIN_FAILURE = "login_failure"
    RENEW = "renew"
    RENEW_FAILURE = "renew_failure"
    CACHE_HIT = "cache_hit"
    CACHE_MISS = "cache_miss"
    STALE_SERVED = "stale_served"  # Vault failed, a cached value still inside its TTL was served
    PERMISSION_DENIED = "permission_denied"
    UNAVAILABLE = "unavailable"  # SecretsUnavailable raised to a caller
    SSH_SIGNED = "ssh_signed"
    SSH_REFUSED = "ssh_refused"


class Reason(StrEnum):
    """Why Vault could not serve: the reason in logs, metrics and ``SecretsUnavailable.extra``."""

    NONE = ""
    SEALED = "sealed"
    UNREACHABLE = "unreachable"
    TLS = "tls"
    PERMISSION_DENIED = "permission_denied"
    TOKEN_INVALID = "token_invalid"  # noqa: S105 - a reason name
    SECRET_ID_INVALID = "secret_id_invalid"  # noqa: S105 - a reason name
    WRAPPING_REFUSED = "wrapping_refused"
    NOT_FOUND = "not_found"
    NOT_INITIALIZED = "not_initialized"
    MISCONFIGURED = "misconfigured"
    ERROR = "error"


Listener = Callable[[Event, Reason], None]


class SecretsMetrics:
    """Counts of (event, reason) and the gateway token's expiry (unix seconds), plus listeners.

    The lead's metrics module either reads ``snapshot()``/``token_expires_at`` from a custom collector or
    adds a listener that increments its own Prometheus counters.
    """

    def __init__(self) -> None:
        self.counts: Counter[tuple[Event, Reason]] = Counter()
        self.token_expires_at: float | None = None
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def record(self, event: Event, reason: Reason = Reason.NONE) -> None:
        self.counts[(event, reason)] += 1
        for listener in self._listeners:
            listener(event, reason)

    def total(self, event: Event) -> int:
        return sum(n for (e, _), n in self.counts.items() if e is event)

    def snapshot(self) -> dict[str, int]:
        """``{"event" or "event:reason": count}``."""
        return {(f"{e}:{r}" if r else str(e)): n for (e, r), n in self.counts.items()}

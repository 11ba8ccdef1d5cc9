"""The one exception tree of the gateway.

Every module raises these (adapters translate their library's errors with ``raise X(...) from exc``);
only ``gateway.api.problems`` turns them into HTTP responses and only the CLI turns them into exit codes.
Each class carries the stable RFC 9457 problem ``type`` slug and the HTTP status it maps to.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar


class AntennaError(Exception):
    """Root of the tree. ``detail`` is safe to show to the caller: it never holds a secret."""

    slug: ClassVar[str] = "internal-error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra: dict[str, Any] = extra


class ConfigurationError(AntennaError):
    """The configuration is invalid; the process refuses to start."""

    slug = "invalid-configuration"
    title = "Invalid configuration"


class InvalidToken(AntennaError):
    """The bearer token is missing or fails a check. The reason is logged, never returned."""

    slug = "invalid-token"
    status = 401
    title = "Invalid or missing bearer token"


class Forbidden(AntennaError):
    slug = "forbidden"
    status = 403
    title = "Forbidden"


class NotFound(AntennaError):
    """Also raised for objects that exist but belong to a project the caller cannot see."""

    slug = "not-found"
    status = 404
    title = "Not found"


class InvalidRequest(AntennaError):
    """A request field is invalid; ``field`` names it (dotted path)."""

    slug = "invalid-request"
    status = 422
    title = "Invalid request"

    def __init__(self, detail: str, *, field: str, **extra: Any) -> None:
        super().__init__(detail, field=field, **extra)
        self.field = field


class InvalidJob(InvalidRequest):
    """The job spec does not fit the site or partition (limits, resources, allow-lists)."""

    slug = "invalid-job"
    title = "Invalid job"


class PayloadTooLarge(InvalidRequest):
    slug = "payload-too-large"
    status = 413
    title = "Payload too large"


class QuotaExceeded(AntennaError):
    """The project's allocation at the site cannot cover the job's price."""

    slug = "quota-exceeded"
    status = 403
    title = "Allocation exhausted"

    def __init__(self, detail: str, *, available: Decimal, price: Decimal, unit: str) -> None:
        super().__init__(detail, available=str(available), price=str(price), unit=unit)
        self.available = available
        self.price = price


class NoActiveAllocation(AntennaError):
    """No allocation covers now: none was granted, it has not started, or it has ended."""

    slug = "no-active-allocation"
    status = 403
    title = "No active allocation"


class Conflict(AntennaError):
    """The request contradicts the current state (e.g. shrinking a grant below what is committed)."""

    slug = "conflict"
    status = 409
    title = "Conflict"


class IdempotencyConflict(Conflict):
    slug = "idempotency-conflict"
    title = "Idempotency key reused with a different request"


class RateLimited(AntennaError):
    slug = "rate-limited"
    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after


class SiteUnavailable(AntennaError):
    """A site, or something needed to reach it (Vault, the database under contention), is down.

    ``not_sent`` says the request provably never reached the site (no connection, a refused session, a
    throttle): only then may a submission that failed be voided. Anything else may have run there."""

    slug = "site-unavailable"
    status = 503
    title = "Site unavailable"

    def __init__(self, detail: str, *, retry_after: int = 30, not_sent: bool = False, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)
        self.retry_after = retry_after
        self.not_sent = not_sent


class SecretsUnavailable(SiteUnavailable):
    """Vault is sealed, unreachable or refuses us, and no cached secret is still valid."""

    def __init__(self, detail: str, *, retry_after: int = 30, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after, not_sent=True, **extra)  # nothing went to the site


class DatabaseBusy(SiteUnavailable):
    """The embedded database stayed locked past the bounded retries."""


class SiteRejected(AntennaError):
    """The site refused the job (bad partition at the site, account unknown there, ...)."""

    slug = "site-rejected"
    status = 422
    title = "Rejected by the site"


class SiteInvalidJob(SiteRejected):
    """The site found the job itself invalid (unknown partition, resources or limits it does not offer):
    the person's to fix, reported like the gateway's own ``invalid-job``."""

    slug = "invalid-job"
    title = "Invalid job"


class SiteAuthFailed(SiteRejected):
    """The site refused our credentials for the person's account (missing account, bad key, expired cert)."""

    slug = "site-auth-failed"
    status = 502
    title = "The site refused the gateway's credentials"


class LedgerInvariantBroken(AntennaError):
    """A ledger invariant failed a check. Never expected; always a bug or tampering."""

    slug = "ledger-invariant"
    title = "Ledger invariant broken"

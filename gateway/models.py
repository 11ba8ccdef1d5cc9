"""Every table of the gateway, imported in one place for Alembic and for tests that create schemas."""

from gateway.jobs.models import (
    IdempotencyRecord,
    Job,
    JobEvent,
    OutboxEntry,
    ProjectSite,
    SiteAccount,
)
from gateway.ledger.models import LedgerAccount, LedgerEntry, ReconciliationRun, Reservation

__all__ = [
    "IdempotencyRecord",
    "Job",
    "JobEvent",
    "LedgerAccount",
    "LedgerEntry",
    "OutboxEntry",
    "ProjectSite",
    "ReconciliationRun",
    "Reservation",
    "SiteAccount",
]

"""Helpers shared by the ledger tests: a thin client bound to one database, and fixed dates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gateway.db import Database
from gateway.ledger import service as ledger

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DAYS_30 = timedelta(days=30)
SITE = "lumi"
UNIT = "gpu-hours"


class Ledger:
    """The ledger's public functions, each run in its own transaction on ``db``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def allocate(
        self,
        amount: Decimal | int | str,
        *,
        project: str = "p",
        site: str = SITE,
        unit: str = UNIT,
        start: datetime = T0,
        end: datetime | None = None,
        at: datetime | None = None,
    ) -> ledger.Balance:
        return self.db.run(
            lambda s: ledger.set_allocation(
                s,
                project=project,
                site=site,
                unit=unit,
                amount=Decimal(amount),
                start=start,
                end=end or start + DAYS_30,
                actor="quota-admin",
                reason="test allocation",
                at=at or start,
            )
        )

    def top_up(
        self, amount: Decimal | int | str, *, at: datetime, project: str = "p", unit: str = UNIT
    ) -> ledger.Balance:
        return self.db.run(
            lambda s: ledger.top_up(
                s,
                project=project,
                site=SITE,
                unit=unit,
                amount=Decimal(amount),
                actor="quota-admin",
                reason="test top-up",
                at=at,
            )
        )

    def reserve(
        self,
        job: str,
        amount: Decimal | int | str,
        *,
        at: datetime | None = None,
        project: str = "p",
        site: str = SITE,
        unit: str = UNIT,
        person: str = "alice",
    ) -> ledger.ReservationResult:
        return self.db.run(
            lambda s: ledger.reserve(
                s,
                job_id=job,
                project=project,
                site=site,
                unit=unit,
                amount=Decimal(amount),
                person=person,
                at=at or T0 + timedelta(hours=1),
            )
        )

    def settle(
        self,
        job: str,
        outcome: ledger.Outcome,
        amount: Decimal | int | str = 0,
        *,
        at: datetime | None = None,
    ) -> ledger.Settlement:
        return self.db.run(
            lambda s: ledger.settle(
                s, job_id=job, outcome=outcome, amount=Decimal(amount), at=at or T0 + timedelta(hours=2)
            )
        )

    def balances(self, project: str = "p") -> list[ledger.Balance]:
        return self.db.run(lambda s: ledger.balances(s, project=project))

    def balance(self, project: str = "p") -> ledger.Balance:
        [only] = self.balances(project)
        return only

    def problems(self) -> list[str]:
        return self.db.run(ledger.check_invariants)


@pytest.fixture
def book(any_db: Database) -> Ledger:
    return Ledger(any_db)

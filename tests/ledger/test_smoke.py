"""Smoke path of the ledger on both backends: grant, reserve, charge with overrun, refusals."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gateway.db import Database
from gateway.errors import NoActiveAllocation, QuotaExceeded
from gateway.ledger import service as ledger

T0 = datetime(2026, 3, 1, tzinfo=UTC)
END = T0 + timedelta(days=30)


def test_reserve_charge_overrun_and_refusal(any_db: Database) -> None:
    def grant(s):  # type: ignore[no-untyped-def]
        return ledger.set_allocation(
            s,
            project="p",
            site="lumi",
            unit="gpu-hours",
            amount=Decimal(100),
            start=T0,
            end=END,
            actor="admin",
            reason="grant",
            at=T0,
        )

    any_db.run(grant)
    any_db.run(
        lambda s: ledger.reserve(
            s,
            job_id="j1",
            project="p",
            site="lumi",
            unit="gpu-hours",
            amount=Decimal("60"),
            person="alice",
            at=T0 + timedelta(hours=1),
        )
    )
    with pytest.raises(QuotaExceeded) as refused:
        any_db.run(
            lambda s: ledger.reserve(
                s,
                job_id="j2",
                project="p",
                site="lumi",
                unit="gpu-hours",
                amount=Decimal("40.000001"),
                person="alice",
                at=T0 + timedelta(hours=1),
            )
        )
    assert refused.value.available == Decimal("40")
    settled = any_db.run(
        lambda s: ledger.settle(s, job_id="j1", outcome="charge", amount=Decimal("61.5"), at=T0 + timedelta(hours=2))
    )
    assert (settled.charged, settled.overrun, settled.replayed) == (
        Decimal(60),
        Decimal("1.5"),
        False,
    )
    again = any_db.run(
        lambda s: ledger.settle(s, job_id="j1", outcome="charge", amount=Decimal("1"), at=T0 + timedelta(hours=3))
    )
    assert (again.charged, again.overrun, again.replayed) == (Decimal(60), Decimal("1.5"), True)
    [bal] = any_db.run(lambda s: ledger.balances(s, project="p"))
    assert (bal.granted, bal.reserved, bal.charged, bal.overrun, bal.available) == (
        Decimal(100),
        Decimal(0),
        Decimal(60),
        Decimal("1.5"),
        Decimal(40),
    )
    with pytest.raises(NoActiveAllocation):
        any_db.run(
            lambda s: ledger.reserve(
                s,
                job_id="j3",
                project="p",
                site="lumi",
                unit="gpu-hours",
                amount=Decimal(1),
                person="alice",
                at=END,
            )
        )
    assert any_db.run(ledger.check_invariants) == []

"""Each ledger invariant of the quota issue, asserted on SQLite and on the real PostgreSQL (``any_db``).

Where an invariant is enforced by the database itself (CHECK constraint, append-only trigger), the test
goes around the code with raw SQL to show the database refuses; where it is detected by
``check_invariants``, the test tampers with a row and shows the check reports it (so the check can fail).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from gateway.db import Database
from gateway.errors import (
    Conflict,
    InvalidRequest,
    LedgerInvariantBroken,
    NoActiveAllocation,
    NotFound,
    QuotaExceeded,
)
from gateway.ledger import service as ledger
from gateway.ledger.models import LedgerEntry, ReservationState
from tests.ledger.conftest import DAYS_30, SITE, T0, UNIT, Ledger

H = timedelta(hours=1)


def raw(db: Database, sql: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(text(sql))


# --- granted = available + reserved + charged; cached == entries ----------------------------------


def test_reserve_charge_top_up_and_void_leave_exact_figures_that_agree_with_the_entries(book: Ledger) -> None:
    book.allocate(100)
    book.reserve("a", 30)
    book.reserve("b", 20)
    book.settle("a", "charge", 25)
    book.top_up(10, at=T0 + 3 * H)
    book.settle("b", "void")
    bal = book.balance()
    assert (bal.granted, bal.reserved, bal.charged, bal.available) == (110, 0, 25, 85)
    assert book.problems() == []  # the cached figures equal those derived from the entries alone


def test_cached_balance_equals_the_balance_derived_from_entries_alone(book: Ledger, any_db: Database) -> None:
    book.allocate(100)
    book.reserve("a", 30)
    book.reserve("b", 20)
    book.settle("a", "charge", 45)  # 30 charged, 15 overrun
    account_id = any_db.run(
        lambda s: s.execute(text("SELECT id FROM ledger_accounts WHERE kind = 'allocation'")).scalar_one()
    )
    granted, reserved, charged = any_db.run(lambda s: ledger.derived_balance(s, account_id))
    assert (granted, reserved, charged) == (100_000_000, 20_000_000, 30_000_000)


def test_a_tampered_cached_balance_is_reported(book: Ledger, any_db: Database) -> None:
    book.allocate(100)
    book.reserve("a", 30)
    raw(any_db, "UPDATE ledger_accounts SET granted = granted + 1 WHERE kind = 'allocation'")
    problems = book.problems()
    assert len(problems) == 1
    assert "!= entries" in problems[0]
    with pytest.raises(LedgerInvariantBroken, match="!= entries"):
        any_db.run(ledger.assert_invariants)


# --- charged + reserved never exceeds granted (atomic) --------------------------------------------


def test_a_reservation_fits_exactly_and_one_micro_unit_more_is_refused(book: Ledger) -> None:
    book.allocate(100)
    book.reserve("a", "99.999999")
    with pytest.raises(QuotaExceeded) as refused:
        book.reserve("b", "0.000002")
    assert (refused.value.available, refused.value.price) == (Decimal("0.000001"), Decimal("0.000002"))
    book.reserve("c", "0.000001")
    assert book.balance().available == 0
    assert book.problems() == []


def test_the_database_refuses_a_write_that_would_overspend(book: Ledger, any_db: Database) -> None:
    book.allocate(100)
    book.reserve("a", 60)
    with pytest.raises(DBAPIError, match=r"(?i)check|never_overspent"):
        raw(any_db, "UPDATE ledger_accounts SET charged = 41000000 WHERE kind = 'allocation'")
    with pytest.raises(DBAPIError, match=r"(?i)check|never_overspent"):
        raw(any_db, "UPDATE ledger_accounts SET reserved = -1 WHERE kind = 'allocation'")
    assert book.balance().reserved == 60
    assert book.problems() == []


def test_a_refused_reservation_writes_nothing(book: Ledger, any_db: Database) -> None:
    book.allocate(10)
    with pytest.raises(QuotaExceeded):
        book.reserve("big", 11)
    assert any_db.run(lambda s: ledger.reservation_of(s, "big")) is None
    count = any_db.run(lambda s: s.execute(text("SELECT count(*) FROM ledger_entries WHERE job_id = 'big'")).scalar())
    assert count == 0
    assert book.balance().reserved == 0


# --- one reservation per job, ending exactly once; replays ----------------------------------------


def test_reserving_the_same_job_twice_returns_the_first_reservation(book: Ledger) -> None:
    book.allocate(100)
    first = book.reserve("a", 30)
    again = book.reserve("a", 30, at=T0 + 5 * H)
    assert (first.replayed, again.replayed) == (False, True)
    assert again.amount == first.amount == 30
    assert book.balance().reserved == 30
    with pytest.raises(Conflict):
        book.reserve("a", 31)
    assert book.problems() == []


OUTCOMES: list[ledger.Outcome] = ["charge", "release", "void"]


def test_a_reservation_ends_exactly_once_whatever_is_reported_after(book: Ledger) -> None:
    book.allocate(1000)
    expected_charged = Decimal(0)
    for first in OUTCOMES:
        for second in OUTCOMES:
            job = f"{first}-then-{second}"
            book.reserve(job, 30)
            original = book.settle(job, first, 12 if first == "charge" else 0)
            replay = book.settle(job, second, 50 if second == "charge" else 0, at=T0 + 9 * H)
            assert (original.replayed, replay.replayed) == (False, True), job
            assert (replay.state, replay.charged, replay.overrun) == (
                original.state,
                original.charged,
                original.overrun,
            ), job
            expected_charged += 12 if first == "charge" else 0
    bal = book.balance()
    assert (bal.reserved, bal.charged, bal.overrun) == (0, expected_charged, 0)
    assert book.problems() == []


def test_settling_an_unknown_job_is_not_found(book: Ledger) -> None:
    book.allocate(100)
    with pytest.raises(NotFound):
        book.settle("nobody", "charge", 1)


def test_the_charge_is_released_down_to_the_actual_usage(book: Ledger) -> None:
    book.allocate(100)
    book.reserve("a", 30)
    done = book.settle("a", "charge", "7.25")
    assert (done.state, done.reserved, done.charged, done.released, done.overrun) == (
        ReservationState.CHARGED,
        30,
        Decimal("7.25"),
        Decimal("22.75"),
        0,
    )
    assert book.balance().available == Decimal("92.75")


# --- overrun --------------------------------------------------------------------------------------


def test_a_charge_above_the_reservation_is_booked_as_an_overrun(book: Ledger, any_db: Database) -> None:
    book.allocate(100)
    book.reserve("a", 30)
    done = book.settle("a", "charge", "31.5")
    assert (done.charged, done.overrun) == (30, Decimal("1.5"))
    bal = book.balance()
    assert (bal.charged, bal.overrun, bal.available) == (30, Decimal("1.5"), 70)
    lines = any_db.run(lambda s: ledger.usage(s, project="p"))
    assert [(line.kind, line.amount) for line in lines] == [("charge", 30), ("overrun", Decimal("1.5"))]
    assert book.problems() == []


# --- dating inside the period; expired allocations ------------------------------------------------


def test_a_settlement_after_the_period_is_dated_at_its_last_instant(book: Ledger, any_db: Database) -> None:
    book.allocate(100)
    book.reserve("a", 30, at=T0 + DAYS_30 - H)
    book.settle("a", "charge", 40, at=T0 + DAYS_30 + 5 * H)  # the job ran past the period's end
    [charge, overrun] = any_db.run(lambda s: ledger.usage(s, project="p"))
    last_instant = T0 + DAYS_30 - timedelta(microseconds=1)
    assert charge.effective_at == overrun.effective_at == last_instant
    assert book.problems() == []


def test_a_grant_made_before_the_period_is_dated_at_its_start(book: Ledger, any_db: Database) -> None:
    book.allocate(100, start=T0 + DAYS_30, at=T0)
    dates = any_db.run(lambda s: s.scalars(select(LedgerEntry.effective_at)).all())
    assert dates == [T0 + DAYS_30]
    assert book.problems() == []


def test_an_entry_dated_outside_its_period_is_reported(book: Ledger, any_db: Database) -> None:
    book.allocate(100)
    book.reserve("a", 30)
    raw(
        any_db,
        "INSERT INTO ledger_entries (key, kind, layer, debit_account_id, credit_account_id, amount, actor, reason,"
        " effective_at, recorded_at) SELECT 'bogus', 'adjustment', 'posted', a.id, u.id, 1, 'x', 'x',"
        " '2030-01-01 00:00:00', '2030-01-01 00:00:00' FROM ledger_accounts a, ledger_accounts u"
        " WHERE a.kind = 'allocation' AND u.kind = 'usage'",
    )
    problems = book.problems()
    assert any("dated outside" in p for p in problems)


def test_an_expired_or_future_allocation_admits_nothing(book: Ledger) -> None:
    book.allocate(100)
    with pytest.raises(NoActiveAllocation):
        book.reserve("late", 1, at=T0 + DAYS_30)
    with pytest.raises(NoActiveAllocation):
        book.reserve("early", 1, at=T0 - timedelta(microseconds=1))
    with pytest.raises(NoActiveAllocation):
        book.top_up(10, at=T0 + DAYS_30)
    with pytest.raises(NoActiveAllocation):
        book.reserve("elsewhere", 1, site="lucia")
    book.reserve("last", 1, at=T0 + DAYS_30 - timedelta(microseconds=1))
    assert book.problems() == []


# --- admin: grant, top up, shorten, end, with jobs already reserved -------------------------------


def test_shrinking_below_what_is_committed_is_refused_and_down_to_it_is_allowed(book: Ledger) -> None:
    book.allocate(100)
    book.reserve("a", 30)
    book.reserve("b", 20)
    book.settle("a", "charge", 25)
    with pytest.raises(Conflict) as refused:
        book.allocate("44.999999")
    assert refused.value.extra["minimum"] == "45.000000"
    with pytest.raises(Conflict):
        book.top_up(-56, at=T0 + 3 * H)
    bal = book.allocate(45)
    assert (bal.granted, bal.reserved, bal.charged, bal.available) == (45, 20, 25, 0)
    with pytest.raises(QuotaExceeded):
        book.reserve("c", "0.000001")
    assert book.settle("b", "charge", 20).charged == 20  # the job admitted before the shrink stays covered
    assert book.problems() == []


def test_top_up_adds_to_the_active_allocation(book: Ledger) -> None:
    book.allocate(100)
    book.reserve("a", 100)
    with pytest.raises(QuotaExceeded):
        book.reserve("b", 5)
    assert book.top_up(5, at=T0 + H).available == 5
    book.reserve("b", 5)
    assert book.top_up("-0", at=T0 + H).available == 0
    assert book.problems() == []


def test_ending_an_allocation_now_keeps_reserved_jobs_and_admits_no_new_one(book: Ledger) -> None:
    book.allocate(100)
    book.reserve("running", 30, at=T0 + H)
    now = T0 + 2 * H
    ended = book.allocate(100, end=now, at=now)
    assert ended.period_end == now
    with pytest.raises(NoActiveAllocation):
        book.reserve("new", 1, at=now)
    done = book.settle("running", "charge", 10, at=now + 5 * H)
    assert done.charged == 10
    assert book.balance().charged == 10
    assert book.problems() == []


def test_an_allocation_cannot_end_before_its_last_entry(book: Ledger) -> None:
    book.allocate(100)
    book.reserve("a", 30, at=T0 + 10 * H)
    with pytest.raises(Conflict):
        book.allocate(100, end=T0 + 10 * H)
    book.allocate(100, end=T0 + 10 * H + timedelta(microseconds=1))
    assert book.problems() == []


def test_extending_and_overlapping_periods(book: Ledger) -> None:
    book.allocate(100)
    assert book.allocate(100, end=T0 + 2 * DAYS_30).period_end == T0 + 2 * DAYS_30
    with pytest.raises(Conflict):
        book.allocate(50, start=T0 + DAYS_30)  # overlaps the extended period
    book.allocate(50, start=T0 + 2 * DAYS_30)
    assert [b.granted for b in book.balances()] == [100, 50]


def test_period_roll_over_books_old_jobs_to_the_old_period(book: Ledger) -> None:
    book.allocate(100)
    book.allocate(80, start=T0 + DAYS_30)
    book.reserve("old", 30, at=T0 + DAYS_30 - H)
    book.reserve("new", 30, at=T0 + DAYS_30 + H)
    book.settle("old", "charge", 20, at=T0 + DAYS_30 + 2 * H)
    old, new = book.balances()
    assert (old.reserved, old.charged, new.reserved, new.charged) == (0, 20, 30, 0)
    assert book.problems() == []


def test_invalid_amounts_are_refused(book: Ledger) -> None:
    with pytest.raises(InvalidRequest):
        book.allocate(-1)
    with pytest.raises(InvalidRequest):
        book.allocate("0.0000001")
    with pytest.raises(InvalidRequest):
        book.allocate(ledger.MAX_AMOUNT + 1)
    with pytest.raises(InvalidRequest):
        book.allocate(100, end=T0)
    book.allocate(100)
    with pytest.raises(InvalidRequest):
        book.reserve("zero", 0)
    with pytest.raises(InvalidRequest):
        book.top_up(ledger.MAX_AMOUNT, at=T0 + H)
    book.reserve("a", 10)
    with pytest.raises(InvalidRequest):
        book.settle("a", "charge", -1)
    assert book.problems() == []


# --- append-only journal --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    ["UPDATE ledger_entries SET amount = amount + 1", "DELETE FROM ledger_entries"],
)
def test_the_journal_refuses_update_and_delete(book: Ledger, any_db: Database, sql: str) -> None:
    book.allocate(100)
    with pytest.raises(DBAPIError, match="append-only"):
        raw(any_db, sql)
    assert book.balance().granted == 100
    assert book.problems() == []


def test_the_journal_refuses_truncate_on_postgresql(pg_db: Database) -> None:
    Ledger(pg_db).allocate(100)
    with pytest.raises(DBAPIError, match="append-only"):
        raw(pg_db, "TRUNCATE ledger_entries CASCADE")


# --- usage report ---------------------------------------------------------------------------------


def test_usage_by_project_person_site_and_period(book: Ledger, any_db: Database) -> None:
    book.allocate(100)
    book.allocate(100, start=T0 + DAYS_30)
    book.allocate(500, site="lucia", unit="buh")
    book.allocate(100, project="other")
    book.reserve("a1", 10, person="alice")
    book.reserve("b1", 10, person="bob")
    book.reserve("a2", 10, person="alice", at=T0 + DAYS_30 + H)
    book.reserve("l1", 50, person="alice", site="lucia", unit="buh")
    book.reserve("o1", 10, project="other", person="alice")
    book.settle("a1", "charge", 4)
    book.settle("b1", "charge", 12)  # 10 + 2 overrun
    book.settle("a2", "charge", 3, at=T0 + DAYS_30 + 2 * H)
    book.settle("l1", "charge", 50)
    book.settle("o1", "charge", 10)

    def report(**filters: object) -> list[tuple[str | None, str, str, Decimal]]:
        lines = any_db.run(lambda s: ledger.usage(s, project="p", **filters))  # type: ignore[arg-type]
        return [(line.job_id, line.site, line.kind, line.amount) for line in lines]

    assert report(person="alice") == [
        ("a1", SITE, "charge", 4),
        ("l1", "lucia", "charge", 50),
        ("a2", SITE, "charge", 3),
    ]
    assert report(site="lucia") == [("l1", "lucia", "charge", 50)]
    assert report(period_start=T0 + DAYS_30) == [("a2", SITE, "charge", 3)]
    assert report(start=T0 + DAYS_30) == [("a2", SITE, "charge", 3)]
    assert report(end=T0 + DAYS_30, site=SITE) == [
        ("a1", SITE, "charge", 4),
        ("b1", SITE, "charge", 10),
        ("b1", SITE, "overrun", 2),
    ]
    totals = ledger.usage_totals(any_db.run(lambda s: ledger.usage(s, project="p")))
    assert [(t.person, t.site, t.unit, t.period_start, t.charged, t.overrun, t.jobs) for t in totals] == [
        ("alice", "lucia", "buh", T0, 50, 0, 1),
        ("alice", SITE, UNIT, T0, 4, 0, 1),
        ("bob", SITE, UNIT, T0, 10, 2, 1),
        ("alice", SITE, UNIT, T0 + DAYS_30, 3, 0, 1),
    ]
    csv_text = ledger.usage_csv(any_db.run(lambda s: ledger.usage(s, project="p", person="bob")))
    assert csv_text.splitlines() == [
        "effective_at,project,site,unit,period_start,person,job_id,kind,amount",
        f"{(T0 + 2 * H).isoformat()},p,{SITE},{UNIT},{T0.isoformat()},bob,b1,charge,10.000000",
        f"{(T0 + 2 * H).isoformat()},p,{SITE},{UNIT},{T0.isoformat()},bob,b1,overrun,2.000000",
    ]
    assert book.problems() == []


def test_open_reservations_lists_pending_jobs(book: Ledger, any_db: Database) -> None:
    book.allocate(100)
    book.reserve("a", 1, at=T0 + H)
    book.reserve("b", 1, at=T0 + 3 * H)
    book.reserve("c", 1, at=T0 + 2 * H)
    book.settle("c", "void")
    assert list(any_db.run(ledger.open_reservations)) == ["a", "b"]
    assert list(any_db.run(lambda s: ledger.open_reservations(s, older_than=T0 + 2 * H))) == ["a"]


# --- PostgreSQL: the reservation's UPDATE runs at commit ------------------------------------------


def test_a_reservation_that_loses_the_race_is_refused_at_commit(pg_db: Database) -> None:
    book = Ledger(pg_db)
    book.allocate(10)

    def reserve(s: Session, job: str) -> None:
        ledger.reserve(s, job_id=job, project="p", site=SITE, unit=UNIT, amount=Decimal(8), person="a", at=T0 + H)

    with pg_db.sessions() as slow:
        transaction = slow.begin()
        reserve(slow, "slow")  # passes the check against committed state...
        pg_db.run(lambda s: reserve(s, "fast"))  # ...then another replica takes the units and commits
        with pytest.raises(QuotaExceeded) as refused:
            transaction.commit()
    assert (refused.value.available, refused.value.price, refused.value.extra["unit"]) == (2, 8, UNIT)
    assert pg_db.run(lambda s: ledger.reservation_of(s, "slow")) is None
    assert book.balance().reserved == 8
    assert book.problems() == []


def test_a_period_ended_before_a_pending_reservation_commits_refuses_it(pg_db: Database) -> None:
    book = Ledger(pg_db)
    book.allocate(10)
    with pg_db.sessions() as late:
        transaction = late.begin()
        ledger.reserve(
            late, job_id="late", project="p", site=SITE, unit=UNIT, amount=Decimal(1), person="a", at=T0 + 5 * H
        )
        book.allocate(10, end=T0 + 2 * H, at=T0 + 2 * H)  # the admin ends the allocation meanwhile
        with pytest.raises(NoActiveAllocation):
            transaction.commit()
    assert book.balance().reserved == 0
    assert book.problems() == []


def test_reserving_and_settling_in_one_transaction(any_db: Database) -> None:
    book = Ledger(any_db)
    book.allocate(10)

    def work(s: Session) -> ledger.Settlement:
        ledger.reserve(s, job_id="j", project="p", site=SITE, unit=UNIT, amount=Decimal(4), person="a", at=T0 + H)
        return ledger.settle(s, job_id="j", outcome="charge", amount=Decimal(3), at=T0 + 2 * H)

    assert any_db.run(work).charged == 3
    bal = book.balance()
    assert (bal.reserved, bal.charged) == (0, 3)
    assert book.problems() == []


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM ledger_accounts WHERE kind = 'allocation'",
        "UPDATE ledger_accounts SET project = 'other' WHERE kind = 'allocation'",
        "UPDATE ledger_accounts SET id = id + 1000 WHERE kind = 'allocation'",
    ],
)
def test_accounts_are_never_deleted_and_keep_their_identity(book: Ledger, any_db: Database, sql: str) -> None:
    book.allocate(100)
    with pytest.raises(DBAPIError, match="never deleted"):
        raw(any_db, sql)
    assert book.balance().granted == 100


def test_a_reference_to_a_missing_account_is_reported(book: Ledger, any_db: Database) -> None:
    book.allocate(100)
    raw(
        any_db,
        "INSERT INTO ledger_entries (key, kind, layer, debit_account_id, credit_account_id, amount, actor, reason,"
        " effective_at, recorded_at) SELECT 'dangling', 'adjustment', 'posted', 999999, u.id, 1, 'x', 'x',"
        " '2026-03-02 00:00:00', '2026-03-02 00:00:00' FROM ledger_accounts u WHERE u.kind = 'usage'",
    )
    assert any("does not exist" in p for p in book.problems())

"""Reconciliation of the ledger's charges with a site's accounting records (pure function, and from a session)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import func, select

from gateway.billing import Resources
from gateway.connectors.base import UsageRecord
from gateway.db import Database
from gateway.ledger import service as ledger
from gateway.ledger.models import LedgerEntry
from gateway.ledger.reconcile import DifferenceKind, reconcile, reconcile_session
from tests.billing.conftest import load_example
from tests.ledger.conftest import DAYS_30, T0, Ledger

LUMI = load_example().sites["lumi"]
FORMULAS = {name: p.billing for name, p in LUMI.partitions.items()}
ACCOUNTS = {"project_465000001": "p", "project_465000002": "q"}
H = timedelta(hours=1)
PERIOD = ledger.Balance("p", "lumi", "cpu-core-hours", T0, T0 + DAYS_30, *(Decimal(0),) * 4)


def line(
    job: str | None, amount: str, *, kind: str = "charge", project: str = "p", site: str = "lumi"
) -> ledger.UsageLine:
    return ledger.UsageLine(
        job_id=job,
        person="alice",
        project=project,
        site=site,
        unit="cpu-core-hours",
        period_start=T0,
        kind=kind,
        amount=Decimal(amount),
        effective_at=T0 + 5 * H,
    )


def record(
    job: str | None,
    *,
    nodes: int = 1,
    cores: int = 4,
    memory_gb: int = 32,
    hours: float = 24,
    partition: str = "small",
    account: str = "project_465000001",
    site_job: str = "",
) -> UsageRecord:
    return UsageRecord(
        site_job_id=site_job or f"site-{job}",
        job_id=job,
        project_account=account,
        partition=partition,
        elapsed_seconds=int(hours * 3600),
        allocated=Resources(nodes=nodes, cores=cores, memory_gb=Decimal(memory_gb)),
        ended_at=T0 + 4 * H,
    )


def run(lines: list[ledger.UsageLine], records: list[UsageRecord], **options: object):  # type: ignore[no-untyped-def]
    return reconcile(
        site="lumi",
        ledger_lines=lines,
        site_records=records,
        projects_by_account=ACCOUNTS,
        formulas=FORMULAS,
        periods=[PERIOD],
        **options,  # type: ignore[arg-type]
    )


def test_matching_charges_priced_with_the_partition_formula_reconcile() -> None:
    # small: max(4 cores, ceil(32 GB / 2)) x 24 h = 384; standard: 2 nodes x 128 x 1 h = 256
    result = run(
        [line("a", "384"), line("b", "256")],
        [record("a"), record("b", partition="standard", hours=1, nodes=2, cores=256, memory_gb=512)],
    )
    assert result.ok
    assert result.jobs_matched == 2
    [total] = result.totals
    assert (total.project, total.ledger_amount, total.site_amount, total.delta) == ("p", 640, 640, 0)
    assert "2 jobs matched, no differences" in result.summary()


def test_a_charge_with_its_overrun_is_compared_whole() -> None:
    result = run([line("a", "380"), line("a", "4", kind="overrun")], [record("a")])
    assert result.ok


def test_a_charge_the_site_does_not_know_is_missing_at_site() -> None:
    result = run([line("a", "384"), line("ghost", "10")], [record("a")])
    [diff] = result.differences
    assert (diff.kind, diff.job_id, diff.ledger_amount, diff.site_amount, diff.delta) == (
        DifferenceKind.MISSING_AT_SITE,
        "ghost",
        10,
        0,
        -10,
    )


def test_usage_the_ledger_never_charged_is_missing_in_ledger() -> None:
    # a job voided by the gateway that ran anyway, and a job run at the site outside the gateway
    result = run([], [record("voided-but-ran", hours=1), record(None, site_job="4242", hours=2)])
    assert [(d.kind, d.job_id, d.site_job_ids, d.site_amount, d.period_start) for d in result.differences] == [
        (DifferenceKind.MISSING_IN_LEDGER, None, ("4242",), 32, T0),
        (DifferenceKind.MISSING_IN_LEDGER, "voided-but-ran", ("site-voided-but-ran",), 16, T0),
    ]


def test_a_job_that_never_ran_at_the_site_and_was_voided_is_no_difference() -> None:
    assert run([], [record("voided", hours=0)]).ok


def test_amounts_are_compared_within_the_tolerance() -> None:
    within = run([line("a", "383.995")], [record("a")])
    assert within.ok
    beyond = run([line("a", "380")], [record("a")])
    [diff] = beyond.differences
    assert (diff.kind, diff.delta) == (DifferenceKind.AMOUNT_DIFFERS, 4)
    exact = run([line("a", "383.995")], [record("a")], tolerance=Decimal(0))
    assert [d.kind for d in exact.differences] == [DifferenceKind.AMOUNT_DIFFERS]


def test_requeued_jobs_sum_their_site_records() -> None:
    result = run([line("a", "384")], [record("a", hours=20, site_job="1"), record("a", hours=4, site_job="2")])
    assert result.ok


def test_records_on_unknown_partitions_and_accounts() -> None:
    result = run(
        [],
        [
            record("a", partition="mystery"),
            record("b", account="project_999"),
            record(None, account="project_999"),  # another project's own job at the site: not ours
        ],
    )
    assert sorted((d.kind, d.job_id) for d in result.differences) == [
        (DifferenceKind.UNKNOWN_ACCOUNT, "b"),
        (DifferenceKind.UNKNOWN_PARTITION, "a"),
    ]
    assert result.ignored_records == 1
    assert result.counts()[DifferenceKind.MISSING_AT_SITE] == 0


def test_recent_charges_are_not_missing_before_the_site_books_them() -> None:
    result = run([line("a", "384"), line("late", "10")], [record("a")], site_books_after=T0 + 5 * H)
    assert result.not_yet_at_site == ["late"]
    assert result.ok
    assert "not yet booked" in result.summary()
    earlier = run([line("late", "10")], [], site_books_after=T0 + 6 * H)
    assert [d.kind for d in earlier.differences] == [DifferenceKind.MISSING_AT_SITE]


def test_other_sites_lines_are_ignored() -> None:
    assert run([line("a", "384"), line("x", "5", site="lucia")], [record("a")]).ok


def test_reconcile_from_a_session_is_read_only_and_ignores_site_limits(any_db: Database) -> None:
    book = Ledger(any_db)
    book.allocate(10_000, project="p", unit="cpu-core-hours")
    book.allocate(10_000, project="q", unit="cpu-core-hours")
    book.reserve("a", 400, project="p", unit="cpu-core-hours")
    book.reserve("b", 100, project="q", unit="cpu-core-hours")
    book.reserve("c", 100, project="q", unit="cpu-core-hours")
    book.settle("a", "charge", 384)
    book.settle("b", "charge", 110)  # 100 charged + 10 overrun
    book.settle("c", "void")
    before = book.balances("p") + book.balances("q")
    entries = any_db.run(lambda s: s.scalar(select(func.count()).select_from(LedgerEntry)))
    records = [
        record("a"),
        record("b", account="project_465000002", cores=110, memory_gb=1, hours=1),
        record("c", account="project_465000002", cores=8, memory_gb=1, hours=1),  # voided, but it ran
    ]
    result = any_db.run(
        lambda s: reconcile_session(
            s,
            site="lumi",
            start=T0,
            end=T0 + DAYS_30,
            site_records=records,
            projects_by_account=ACCOUNTS,
            formulas=FORMULAS,
        )
    )
    assert [(d.kind, d.project, d.job_id, d.site_amount) for d in result.differences] == [
        (DifferenceKind.MISSING_IN_LEDGER, "q", "c", 8)
    ]
    assert [(t.project, t.ledger_amount, t.site_amount) for t in result.totals] == [("p", 384, 384), ("q", 110, 118)]
    # nothing written, and no grant taken from the site: the allocations are the ledger's own
    assert book.balances("p") + book.balances("q") == before
    assert any_db.run(lambda s: s.scalar(select(func.count()).select_from(LedgerEntry))) == entries
    assert not hasattr(result, "granted")
    assert book.problems() == []

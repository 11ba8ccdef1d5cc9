"""Properties of pricing over every partition of policies/sites.example.yaml, checked with hypothesis.

The oracle reads the YAML itself (not the pydantic models) and computes the price with exact rationals,
so a mistake in the models, in the shipped config's loading or in the rounding shows up as a difference.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.billing import AMOUNT_QUANTUM, Resources, price, to_micro
from gateway.db import Database, make_engine
from gateway.ledger import service as ledger
from gateway.migrations import migrate
from gateway.settings import PartitionSettings
from tests.billing.conftest import EXAMPLE, load_example

SETTINGS = load_example()
RAW: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
PARTITIONS = sorted((site, name) for site, s in SETTINGS.sites.items() for name in s.partitions)


def oracle(site: str, name: str, r: Resources, seconds: int) -> Decimal:
    """The price computed independently from the raw YAML with exact rationals, rounded up once."""
    billing = RAW["sites"][site]["partitions"][name]["billing"]
    if billing["kind"] == "whole_node":
        per_hour = r.nodes * Fraction(str(billing["rate_per_node"]))
    else:
        terms = []
        for share in billing["shares"]:
            value = Fraction(str(getattr(r, share["resource"])))
            value = value * Fraction(str(share.get("multiply", 1))) / Fraction(str(share.get("divide", 1)))
            terms.append(Fraction(math.ceil(value)) if share.get("ceil") else value)
        per_hour = max(terms) * Fraction(str(billing.get("weight", 1)))
    micro = math.ceil(per_hour * Fraction(seconds, 3600) * 1_000_000)
    return Decimal(micro) / 1_000_000


@st.composite
def jobs(draw: st.DrawFn) -> tuple[str, str, PartitionSettings, Resources, int]:
    site, name = draw(st.sampled_from(PARTITIONS))
    part = SETTINGS.sites[site].partitions[name]
    nodes = draw(st.integers(1, part.max_nodes))
    resources = Resources(
        nodes=nodes,
        cores=draw(st.integers(1, nodes * part.cores_per_node)),
        memory_gb=Decimal(draw(st.integers(0, nodes * part.memory_gb_per_node * 1000))) / 1000,
        gpus=draw(st.integers(0, nodes * part.gpus_per_node)),
    )
    seconds = draw(st.integers(0, part.max_time_minutes * 60))
    return site, name, part, resources, seconds


def grown(part: PartitionSettings, r: Resources, data: st.DataObject) -> Resources:
    """``r`` with every resource at least as large."""
    return Resources(
        nodes=r.nodes + data.draw(st.integers(0, 8)),
        cores=r.cores + data.draw(st.integers(0, 512)),
        memory_gb=r.memory_gb + Decimal(data.draw(st.integers(0, 4_000_000))) / 1000,
        gpus=r.gpus + data.draw(st.integers(0, 16)),
    )


@given(jobs())
def test_price_is_the_exact_formula_rounded_up_once(job: tuple[str, str, PartitionSettings, Resources, int]) -> None:
    site, name, part, resources, seconds = job
    assert price(part.billing, resources, seconds) == oracle(site, name, resources, seconds)


@given(jobs())
def test_price_is_never_negative_and_respects_the_quantum(
    job: tuple[str, str, PartitionSettings, Resources, int],
) -> None:
    _, _, part, resources, seconds = job
    amount = price(part.billing, resources, seconds)
    assert amount >= 0
    assert amount == amount.quantize(AMOUNT_QUANTUM)
    assert Decimal(to_micro(amount)) / 1_000_000 == amount  # the ledger can store it without loss
    if seconds > 0 and resources.cores > 0:
        assert amount > 0  # every partition charges something for a running job


@given(jobs(), st.integers(0, 30 * 24 * 3600))
def test_price_is_monotone_in_time(job: tuple[str, str, PartitionSettings, Resources, int], more: int) -> None:
    _, _, part, resources, seconds = job
    assert price(part.billing, resources, seconds) <= price(part.billing, resources, seconds + more)


@given(jobs(), st.data())
def test_price_is_monotone_in_resources(
    job: tuple[str, str, PartitionSettings, Resources, int], data: st.DataObject
) -> None:
    _, _, part, resources, seconds = job
    bigger = grown(part, resources, data)
    assert price(part.billing, resources, seconds) <= price(part.billing, bigger, seconds)


@given(jobs(), st.integers(1, 1000))
def test_one_long_job_never_costs_more_than_the_same_work_in_hourly_jobs(
    job: tuple[str, str, PartitionSettings, Resources, int], n: int
) -> None:
    _, _, part, resources, _ = job
    long_job = price(part.billing, resources, n * 3600)
    hourly = n * price(part.billing, resources, 3600)
    # rounding happens once per price, up, by less than one quantum
    assert long_job <= hourly < long_job + n * AMOUNT_QUANTUM


@pytest.fixture(scope="module")
def ledger_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    path: Path = tmp_path_factory.mktemp("ledger") / "antenna.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    db = Database(engine)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for site, s in SETTINGS.sites.items():
        for unit in s.units():
            db.run(
                lambda session, site=site, unit=unit: ledger.set_allocation(
                    session,
                    project="p",
                    site=site,
                    unit=unit,
                    amount=Decimal(10) ** 12,
                    start=t0,
                    end=t0 + timedelta(days=3650),
                    actor="admin",
                    reason="property test budget",
                    at=t0,
                )
            )
    yield db
    db.dispose()


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(jobs())
def test_a_job_that_runs_to_its_time_limit_is_charged_exactly_its_reservation(
    ledger_db: Database, job: tuple[str, str, PartitionSettings, Resources, int]
) -> None:
    site, _, part, resources, limit = job
    reserved = price(part.billing, resources, limit)
    if reserved == 0:
        return  # a zero-length job is refused before it reaches the ledger
    job_id = str(uuid.uuid4())
    at = datetime(2026, 2, 1, tzinfo=UTC)
    res = ledger_db.run(
        lambda s: ledger.reserve(
            s,
            job_id=job_id,
            project="p",
            site=site,
            unit=part.billing.unit,
            amount=reserved,
            person="alice",
            at=at,
        )
    )
    assert res.amount == reserved
    charge = price(part.billing, resources, limit)  # the site reports elapsed == time limit
    done = ledger_db.run(lambda s: ledger.settle(s, job_id=job_id, outcome="charge", amount=charge, at=at))
    assert (done.charged, done.overrun, done.released) == (reserved, 0, 0)

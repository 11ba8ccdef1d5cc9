"""Rounds that one replica runs per site and interval, however many replicas there are (reconciliation, the
status sync): a row per site holds the last round's time and the lease of the replica running one now.

``claim`` takes the lease when the site's last round is an interval old (or it never had one) and no other
replica holds it, with one conditional UPDATE, so two replicas never both win; ``end`` gives it back,
recording the round when it was done. A replica that dies mid-round leaves its lease to expire.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session


def claim(
    session: Session,
    table: type[Any],
    *,
    site: str,
    owner: str,
    now: datetime,
    interval: timedelta,
    lease: timedelta,
    **new_row: Any,
) -> bool:
    """Take ``site``'s next round if it is due; True: the caller runs it, then calls ``end``."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(table).values(site=site, **new_row).on_conflict_do_nothing())
    taken = session.execute(
        update(table)
        .where(
            table.site == site,
            or_(table.leased_until.is_(None), table.leased_until < now),
            or_(table.last_run_at.is_(None), table.last_run_at <= now - interval),
        )
        .values(lease_owner=owner, leased_until=now + lease)
        .execution_options(synchronize_session=False)
    )
    return bool(taken.rowcount == 1)  # type: ignore[attr-defined]


def end(
    session: Session, table: type[Any], *, sites: Iterable[str], owner: str, began: datetime | None, **done: Any
) -> bool:
    """Give the leases back: with ``began``, the rounds that started then are recorded (with ``done``'s
    values); without, they failed and any replica's next tick tries again. False if a lease was lost meanwhile
    (it expired and another replica took it)."""
    names = list(sites)
    values: dict[str, Any] = {"leased_until": None}
    if began is not None:
        values |= {"last_run_at": began, **done}
    ended = session.execute(
        update(table)
        .where(table.site.in_(names), table.lease_owner == owner)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(ended.rowcount == len(names))  # type: ignore[attr-defined]

"""Every job accounted for: the invariant that ties the job table to the ledger.

A job is in exactly one of four conditions, and its state says which:

- never sent: refused by the site, or cancelled before it could reach the site; its reservation is voided;
- held: accepted, at the site, or lost (the site may have it); its reservation is open;
- settled: ended at the site; charged, or voided or released when it never ran;
- resolved by an operator: a lost job closed by hand, charged or voided.

A held job whose reservation is closed ran uncharged (or will); a job that ended with its reservation still
open keeps money from its project forever. Either is a leak.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.jobs.models import AT_SITE_STATES, Job, JobState
from gateway.ledger.models import Reservation, ReservationState

HELD = frozenset({JobState.ACCEPTED, JobState.LOST, *AT_SITE_STATES})
NEVER_SENT = frozenset({JobState.REJECTED})


def check_jobs(session: Session) -> list[str]:
    """Every job whose state and reservation disagree, as sentences; empty when each job is accounted for."""
    problems = []
    rows = session.execute(
        select(Job.id, Job.state, Job.site_job_id, Reservation.state).outerjoin(
            Reservation, Reservation.job_id == Job.id
        )
    )
    for job_id, state, site_job_id, reservation in rows:
        job_state = JobState(state)
        if reservation is None:
            problems.append(f"job {job_id} ({state}) has no reservation")
        elif job_state in HELD and reservation != ReservationState.PENDING.value:
            problems.append(f"job {job_id} is {state} (the site may run it) but its reservation is {reservation}")
        elif job_state not in HELD and reservation == ReservationState.PENDING.value:
            problems.append(f"job {job_id} ended {state} but its reservation is still held")
        elif job_state in NEVER_SENT and reservation != ReservationState.VOIDED.value:
            problems.append(f"job {job_id} never reached the site but its reservation is {reservation}")
        elif job_state == JobState.CANCELLED and site_job_id is None and reservation != ReservationState.VOIDED.value:
            problems.append(f"job {job_id} was cancelled before reaching the site but its reservation is {reservation}")
    return problems

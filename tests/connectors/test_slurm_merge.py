"""How a job's status is decided from the controller's view and Slurm's accounting (v0.0.38 shapes, as
slurmrestd and ``squeue --json`` / ``sacct --json`` of Slurm 22.05 print them), and what Slurm's messages mean.

The shapes here are cut down to the fields the parsers read; the integration tests parse full real replies.
"""

from __future__ import annotations

from typing import Any

from gateway.connectors.base import SiteState
from gateway.connectors.slurm_openapi import (
    V0038,
    classify,
    merge_statuses,
    needs_accounting,
    retry_after_seconds,
    state_of,
)
from gateway.errors import SiteAuthFailed, SiteInvalidJob, SiteRejected, SiteUnavailable

API = V0038()
T0 = 1_795_580_000


def live(job_id: int, state: str, *, name: str | None = None, tres: str = "cpu=2,mem=4G,node=1") -> dict[str, Any]:
    return {
        "job_id": job_id,
        "name": name or f"antenna-{job_id}",
        "user_name": "alice",
        "job_state": state,
        "start_time": T0,
        "end_time": T0 + 70 if state not in ("RUNNING", "PENDING") else 0,
        "tres_alloc_str": tres,
        "state_reason": "None",
        "exit_code": 0,
    }


def accounted(
    job_id: int, state: str, *, partition: str = "small", cpu: int | None = 2, elapsed: int = 70
) -> dict[str, Any]:
    allocated = [] if cpu is None else [{"type": "cpu", "count": cpu}, {"type": "mem", "count": 4096}]
    return {
        "job_id": job_id,
        "name": f"antenna-{job_id}",
        "user": "alice",
        "account": "project_465000001",
        "partition": partition,
        "state": {"current": state, "reason": "None"},
        "time": {"start": T0, "end": T0 + elapsed, "elapsed": elapsed, "submission": T0 - 5},
        "tres": {"allocated": allocated},
        "exit_code": {"return_code": 0},
    }


def merged(jobs: list[dict[str, Any]], records: list[dict[str, Any]], wanted: list[str]) -> dict[str, Any]:
    return merge_statuses(wanted, API.parse_jobs({"jobs": jobs}), API.parse_accounting({"jobs": records}))


def test_an_ended_job_is_final_only_with_its_complete_accounting_record() -> None:
    jobs = [live(1, "COMPLETED"), live(2, "TIMEOUT"), live(3, "RUNNING")]
    assert needs_accounting(["1", "2", "3", "4"], API.parse_jobs({"jobs": jobs})) == ["1", "2", "4"]
    # Accounting has not caught up with job 1 yet (no partition, no TRES): it is still reported running.
    statuses = merged(
        jobs, [accounted(1, "COMPLETED", partition="", cpu=None), accounted(2, "TIMEOUT")], ["1", "2", "3"]
    )
    assert statuses["1"].state == SiteState.RUNNING
    assert statuses["1"].reason == "awaiting accounting"
    assert statuses["2"].state == SiteState.TIMEOUT
    assert (statuses["2"].elapsed_seconds, statuses["2"].allocated.cores) == (70, 2)
    assert statuses["2"].allocated.memory_gb == 4
    assert statuses["3"].state == SiteState.RUNNING


def test_a_job_cancelled_while_pending_ends_without_waiting_and_never_started() -> None:
    jobs = [live(5, "CANCELLED", tres="")]
    statuses = merged(jobs, [accounted(5, "CANCELLED", cpu=None, elapsed=0)], ["5"])
    assert statuses["5"].state == SiteState.CANCELLED
    assert statuses["5"].started_at is None  # so the reservation is voided, not charged
    assert merged(jobs, [], ["5"])["5"].state == SiteState.CANCELLED


def test_jobs_the_controller_forgot_come_from_accounting_and_reused_ids_are_ignored() -> None:
    old = accounted(7, "COMPLETED")
    old["name"] = "smoke-job"  # the same id, from before a controller reset, not a gateway job
    statuses = merged([], [accounted(6, "FAILED"), old], ["6", "7"])
    assert statuses["6"].state == SiteState.FAILED
    assert "7" not in statuses


def test_slurm_messages_map_to_the_projects_errors() -> None:
    assert type(classify("lumi", "Unable to contact slurm controller (connect failure)")) is SiteUnavailable
    invalid = classify("lumi", "Invalid partition name specified")
    assert (type(invalid), invalid.slug) == (SiteInvalidJob, "invalid-job")  # the person's to fix
    assert type(classify("lumi", "Invalid account or account/partition combination specified")) is SiteRejected
    assert type(classify("lumi", "Kill job error on job id 9: Access/permission denied")) is SiteAuthFailed
    limited = classify("lumi", "Rate limit exceeded, please retry")
    assert isinstance(limited, SiteUnavailable)
    assert limited.extra["rate_limited"] is True
    assert type(classify("lumi", "something new", default=SiteUnavailable)) is SiteUnavailable
    assert retry_after_seconds("7") == 7
    assert retry_after_seconds("garbage") == 5
    assert retry_after_seconds("100000") == 3600


def test_item5_states_that_may_still_change_are_never_final() -> None:
    # Not final: the job may run again (requeued, held, suspended, resized) or ends as Slurm has not said yet.
    for name in ("REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT", "SUSPENDED", "STOPPED", "RESIZING"):
        assert not state_of(name).is_final, name
        assert not state_of(name, live=True).is_final, name
    # A state this code does not know is never taken for an end (it was FAILED: ended and charged on a guess).
    assert state_of("SOME_STATE_OF_SLURM_26") == SiteState.UNKNOWN
    # Preempted while the controller still shows it: it may be requeued, so it is watched on; in accounting
    # (the controller has forgotten it) the run ended.
    assert state_of("PREEMPTED", live=True) == SiteState.UNKNOWN
    assert state_of("PREEMPTED") == SiteState.CANCELLED


def test_item5_a_requeued_job_is_followed_not_settled_from_its_earlier_run() -> None:
    # Preempted and requeued: the controller holds it pending again; accounting has the earlier run's record.
    statuses = merged([live(8, "PENDING")], [accounted(8, "PREEMPTED")], ["8"])
    assert statuses["8"].state == SiteState.PENDING
    statuses = merged([live(9, "REQUEUE_HOLD")], [accounted(9, "NODE_FAIL")], ["9"])
    assert not statuses["9"].state.is_final

"""/v1/jobs: submit, list, show, cancel, output."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Literal

from anyio import to_thread
from fastapi import APIRouter, Header, Path, Query, Response, status
from fastapi.responses import PlainTextResponse

from gateway.api.deps import PrincipalDep, RuntimeDep, SubmitterDep
from gateway.api.problems import AUTHENTICATED, problem_responses
from gateway.api.schemas import EstimateOut, JobOut, JobPageOut, JobQuery, ResolveIn
from gateway.errors import AntennaError, NotFound, SiteUnavailable
from gateway.jobs.spec import JobSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=AUTHENTICATED)
JobId = Annotated[uuid.UUID, Path(description="the job's id, as the gateway gave it")]
log = logging.getLogger("antenna.api")

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="same key and body from the same person replays the first answer",
    ),
]


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses=problem_responses(400, 403, 409, 413, 422),
)
def submit(
    spec: JobSpec, who: SubmitterDep, rt: RuntimeDep, response: Response, idempotency_key: IdempotencyKey = None
) -> JobOut:
    site = rt.settings.site(spec.site)
    if site is not None and site.when_unavailable == "refuse" and not rt.health.is_up(spec.site):
        raise SiteUnavailable(f"site {spec.site} is unavailable: {rt.health.last_error(spec.site)}")
    try:
        result = rt.jobs.submit(who, spec, idempotency_key=idempotency_key)
    except AntennaError as exc:  # counted by kind (a bounded set of slugs), then answered as a problem
        rt.metrics.submissions.labels(spec.site, exc.slug).inc()
        raise
    outcome = "replayed" if result.replayed else "accepted"
    job = result.job
    log.info(
        "job submission " + outcome,
        extra={
            "job_id": job.id,
            "project": job.project,
            "site": job.site,
            "partition": job.partition,
            "person": job.person,
            "reserved": str(job.reserved),
            "unit": job.unit,
        },
    )
    rt.metrics.submissions.labels(spec.site, outcome).inc()
    if not result.replayed:
        rt.forwarder.wake()  # committed: deliver now rather than at the next poll of the outbox
        rt.metrics.reservations.labels(result.job.project, result.job.site, result.job.unit).inc()
        rt.metrics.reserved_amount.labels(result.job.project, result.job.site, result.job.unit).inc(
            float(result.job.reserved)
        )
    response.headers["Location"] = f"/v1/jobs/{result.job.id}"
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return JobOut.of(result.job)


# Its own path: under /v1/jobs/ it would read as a job id to every other method.
estimates = APIRouter(prefix="/v1/estimates", tags=["jobs"], responses=AUTHENTICATED)


@estimates.post("", response_model=EstimateOut, responses=problem_responses(400, 403, 413, 422))
def estimate(spec: JobSpec, who: PrincipalDep, rt: RuntimeDep) -> EstimateOut:
    """The price of a job at its time limit, and whether the project can afford it now; nothing is reserved."""
    priced, available = rt.jobs.estimate(who, spec)
    return EstimateOut(
        project=priced.spec.project,
        site=priced.spec.site,
        partition=priced.spec.partition,
        unit=priced.unit,
        price=priced.price,
        time_limit_minutes=priced.time_limit_minutes,
        nodes=priced.resources.nodes,
        cores=priced.resources.cores,
        memory_gb=priced.resources.memory_gb,
        gpus=priced.resources.gpus,
        available=available,
        enough=available is not None and available >= priced.price,
    )


@router.get("", response_model=JobPageOut, responses=problem_responses(422))
def list_jobs(who: PrincipalDep, rt: RuntimeDep, query: Annotated[JobQuery, Query()]) -> JobPageOut:
    page = rt.jobs.list_jobs(
        who,
        project=query.project,
        site=query.site,
        state=query.state.value if query.state else None,
        id_prefix=query.id_prefix,
        limit=query.limit,
        cursor=query.cursor,
    )
    return JobPageOut(jobs=[JobOut.of(j) for j in page.jobs], next_cursor=page.next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses=problem_responses(404, 422))
def get_job(job_id: JobId, who: PrincipalDep, rt: RuntimeDep) -> JobOut:
    return JobOut.of(rt.jobs.get(who, str(job_id)))


@router.delete(
    "/{job_id}", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut, responses=problem_responses(404, 409, 422)
)
def cancel_job(job_id: JobId, who: PrincipalDep, rt: RuntimeDep) -> JobOut:
    job = rt.jobs.cancel(who, str(job_id))
    rt.forwarder.wake()  # a cancel of a job at the site waits in the outbox like a submission
    log.info(
        "job cancel requested",
        extra={"job_id": job.id, "project": job.project, "person": who.person, "state": job.state},
    )
    return JobOut.of(job)


@router.post("/{job_id}/resolve", response_model=JobOut, responses=problem_responses(400, 403, 404, 409, 422))
def resolve_job(job_id: JobId, body: ResolveIn, who: PrincipalDep, rt: RuntimeDep) -> JobOut:
    """End a `lost` job by hand (operators): charge what the site's records say it ran, or void it."""
    job = rt.jobs.resolve(who, str(job_id), charge=None if body.void else body.charge, reason=body.reason)
    log.warning(
        "lost job resolved by an operator",
        extra={"job_id": job.id, "project": job.project, "person": who.person, "charged": str(job.charged)},
    )
    return JobOut.of(job)


@router.get("/{job_id}/output", response_class=PlainTextResponse, responses=problem_responses(404, 422, 502))
async def job_output(
    job_id: JobId, who: PrincipalDep, rt: RuntimeDep, stream: Literal["stdout", "stderr"] = "stdout"
) -> PlainTextResponse:
    job = await to_thread.run_sync(lambda: rt.jobs.find_visible(who, str(job_id)))
    connector = rt.connectors.get(job.site)
    if connector is None or job.site_job_id is None:
        raise NotFound(f"job {job_id} has no output yet (state {job.state})")
    text = await connector.output(account=job.site_account, job_id=job.id, site_job_id=job.site_job_id, stream=stream)
    return PlainTextResponse(text)

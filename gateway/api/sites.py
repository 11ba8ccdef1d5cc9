"""/v1/sites, and the probes /healthz, /readyz and /metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.deps import PrincipalDep, RuntimeDep
from gateway.api.problems import AUTHENTICATED, problem_responses
from gateway.api.schemas import (
    HealthOut,
    PartitionOut,
    ReconciliationDifferenceOut,
    ReconciliationOut,
    ReconciliationQuery,
    SiteOut,
)
from gateway.errors import Forbidden, InvalidRequest, NotFound
from gateway.identity.principal import ROLE_OPERATOR

router = APIRouter()


@router.get("/v1/sites", response_model=list[SiteOut], tags=["sites"], responses=AUTHENTICATED)
def sites(who: PrincipalDep, rt: RuntimeDep) -> list[SiteOut]:
    out = []
    for name, site in rt.settings.sites.items():
        partitions = [
            PartitionOut(
                name=pname,
                unit=p.billing.unit,
                billing=p.billing.kind,
                max_time_minutes=p.max_time_minutes,
                max_nodes=p.max_nodes,
                cores_per_node=p.cores_per_node,
                memory_gb_per_node=p.memory_gb_per_node,
                gpus_per_node=p.gpus_per_node,
                exclusive=p.exclusive,
            )
            for pname, p in site.partitions.items()
        ]
        out.append(
            SiteOut(
                name=name,
                title=site.title or name,
                connector=site.connector,
                healthy=rt.health.is_up(name),
                last_error=rt.health.last_error(name),
                partitions=partitions,
            )
        )
    return out


@router.get(
    "/v1/sites/{site}/reconciliation",
    response_model=ReconciliationOut,
    tags=["sites"],
    responses={**AUTHENTICATED, **problem_responses(403, 404, 422, 502, 503)},
)
async def reconciliation(
    site: Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{0,62}$")],
    query: Annotated[ReconciliationQuery, Query()],
    who: PrincipalDep,
    rt: RuntimeDep,
) -> ReconciliationOut:
    """Compare the ledger's charges with the site's own accounting over a window (operators). Reads only: the
    hourly comparison's metric is left as it is."""
    if not who.has_role(ROLE_OPERATOR):
        raise Forbidden("comparing with a site's accounting needs the antenna-operator role")
    if site not in rt.connectors:
        raise NotFound(f"no site {site!r} (known: {', '.join(sorted(rt.connectors))})")
    until = query.until or rt.clock.now()
    if query.since >= until:
        raise InvalidRequest("since must be before until", field="since")
    result = await rt.reconcile(site, start=query.since, end=until)
    return ReconciliationOut(
        site=site,
        since=query.since,
        until=until,
        ok=result.ok,
        summary=result.summary(),
        differences=[
            ReconciliationDifferenceOut(
                kind=d.kind.value,
                project=d.project,
                unit=d.unit,
                job_id=d.job_id,
                site_job_ids=list(d.site_job_ids),
                ledger_amount=d.ledger_amount,
                site_amount=d.site_amount,
                delta=d.delta,
            )
            for d in result.differences
        ],
    )


ESSENTIAL_LOOPS = frozenset({"forwarder", "status-sync", "readiness"})


@router.get("/healthz", response_model=HealthOut, tags=["health"])
def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get("/readyz", response_model=HealthOut, tags=["health"], responses={503: {"model": HealthOut}})
async def readyz(rt: RuntimeDep) -> Response:
    """Ready when the database answers, the key set is at hand and every background loop runs; Vault, a slow
    issuer with valid cached keys and the sites are reported. Answers from the state a background loop keeps
    (gateway/readiness.py): the probe never waits on a dependency."""
    snapshot = await rt.readiness.current()
    checks, ready = dict(snapshot.checks), snapshot.ready
    for name, problem in rt.supervisor.problems().items():
        # Forwarding and status sync failing is this replica failing; a failing reconciliation is reported.
        essential = name in ESSENTIAL_LOOPS
        ready, checks[f"loop:{name}"] = ready and not essential, problem if essential else f"degraded: {problem}"
    for name in rt.settings.sites:
        checks[f"site:{name}"] = "ok" if rt.health.is_up(name) else f"down: {rt.health.last_error(name)}"
    body = HealthOut(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(rt: RuntimeDep) -> Response:
    return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

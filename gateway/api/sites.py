"""/v1/sites, and the probes /healthz, /readyz and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.deps import PrincipalDep, RuntimeDep
from gateway.api.problems import AUTHENTICATED
from gateway.api.schemas import HealthOut, PartitionOut, SiteOut

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

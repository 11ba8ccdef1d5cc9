"""/v1/sites, and the probes /healthz, /readyz and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.deps import PrincipalDep, RuntimeDep
from gateway.api.problems import AUTHENTICATED
from gateway.api.schemas import HealthOut, PartitionOut, SiteOut
from gateway.errors import AntennaError

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


@router.get("/healthz", response_model=HealthOut, tags=["health"])
def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get("/readyz", response_model=HealthOut, tags=["health"], responses={503: {"model": HealthOut}})
async def readyz(rt: RuntimeDep) -> Response:
    """Ready when the database answers, the key set is loaded and secrets can be served; sites are reported."""
    from anyio import to_thread

    checks: dict[str, str] = {}
    ready = True
    try:
        await to_thread.run_sync(lambda: rt.db.run(lambda s: s.connection().exec_driver_sql("SELECT 1")))
        checks["database"] = "ok"
    except Exception as exc:  # readiness reports any failure as text
        ready, checks["database"] = False, f"error: {type(exc).__name__}"
    # Warming here, not only on a token's arrival: a replica that started while the IdP was away gets no
    # traffic until it is ready, so waiting for a request to fetch the keys would keep it out for good.
    keys_ready = await rt.keys.warm()
    checks["keys"] = "ok" if keys_ready else "not loaded"
    ready = ready and keys_ready
    try:
        await rt.secrets.check()
        checks["secrets"] = "ok"
    except AntennaError as exc:
        # Degraded, not unready: reads and cached credentials still work, and taking every replica out of
        # service during a Vault outage would turn a partial outage into a total one.
        checks["secrets"] = f"degraded: {exc.detail}"
    for name, problem in rt.supervisor.problems().items():  # a loop that cannot run: this replica is no use
        ready, checks[f"loop:{name}"] = False, problem
    for name in rt.settings.sites:
        checks[f"site:{name}"] = "ok" if rt.health.is_up(name) else f"down: {rt.health.last_error(name)}"
    body = HealthOut(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(rt: RuntimeDep) -> Response:
    return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

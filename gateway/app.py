"""``create_app(settings)``: builds the runtime and the FastAPI app around it. Nothing happens at import."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request, Response

from gateway.api import dev_issuer, jobs, problems, projects, sites
from gateway.api.body_limit import BodySizeLimit
from gateway.runtime import DevMode, Runtime, build_runtime
from gateway.settings import Settings

log = logging.getLogger("antenna.api")
API_TITLE = "Antenna gateway"
API_VERSION = "1.0.0"


def create_app(
    settings: Settings, *, dev: DevMode | None = None, runtime: Runtime | None = None, **runtime_options: Any
) -> FastAPI:
    """The gateway as an ASGI app. ``runtime_options`` pass test seams (clock, keys, secrets...) through."""
    rt = runtime or build_runtime(settings, dev=dev, **runtime_options)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await rt.keys.warm()
        await rt.start_background()
        log.info("gateway started", extra={"sites": sorted(settings.sites), "dev": dev is not None})
        try:
            yield
        finally:
            await rt.aclose()

    app = FastAPI(
        title=API_TITLE,
        version=API_VERSION,
        description="Submit jobs to EuroHPC AI supercomputers with the project's allocation enforced at submit.",
        lifespan=lifespan,
    )
    app.state.runtime = rt
    problems.install(app)
    app.include_router(jobs.router)
    app.include_router(jobs.estimates)
    app.include_router(projects.router)
    app.include_router(sites.router)
    if dev is not None:
        dev_issuer.mount(app, dev)

    @app.get("/.well-known/antenna-configuration", include_in_schema=False)
    def client_configuration() -> dict[str, str]:
        """What the CLI needs to sign in: the issuer and its public client."""
        return {
            "issuer": settings.oidc.issuer,
            "client_id": settings.oidc.cli_client_id,
            "audience": settings.oidc.audience,
        }

    _add_middleware(app, rt)
    _document_problems(app)
    return app


def _document_problems(app: FastAPI) -> None:
    """Generate the OpenAPI document once, with problem responses under application/problem+json."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problems.openapi_problem_media_type(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to adjust the document


def _add_middleware(app: FastAPI, rt: Runtime) -> None:
    # Added first, so it runs inside ``observe``: refused bodies are counted and logged like any request.
    app.add_middleware(BodySizeLimit, limit=rt.settings.limits.request_max_bytes)

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request_id = request.headers.get("x-request-id", "")[:64] or uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        elapsed = time.perf_counter() - started
        rt.metrics.http_requests.labels(template, request.method, str(response.status_code)).inc()
        rt.metrics.http_latency.labels(template, request.method).observe(elapsed)
        response.headers["X-Request-Id"] = request_id
        log.info(
            "request",
            extra={
                "method": request.method,
                "route": template,
                "status": response.status_code,
                "duration_ms": round(elapsed * 1000, 2),
                "person": getattr(request.state, "person", None),
            },
        )
        return response

"""Every error becomes an RFC 9457 problem document here, and only here."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from gateway.errors import (
    AntennaError,
    InvalidRequest,
    InvalidToken,
    RateLimited,
    SiteAuthFailed,
    SiteUnavailable,
)

log = logging.getLogger("antenna.api")
PROBLEM_BASE = "https://antenna.example/problems/"
MEDIA_TYPE = "application/problem+json"


class Problem(BaseModel):
    """An RFC 9457 problem document: a stable ``type`` per error, and the members that help act on it."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="a stable URI per kind of error")
    title: str
    status: int
    detail: str = Field(description="what went wrong, safe to show")
    field: str | None = Field(default=None, description="the request field at fault, as the caller wrote it")
    available: str | None = Field(default=None, description="quota-exceeded: what the allocation has left")
    price: str | None = Field(default=None, description="quota-exceeded: what the job would cost")
    unit: str | None = None
    limit: int | None = Field(default=None, description="payload-too-large: the size limit in bytes")
    minimum: str | None = Field(default=None, description="conflict: the lowest grant still covering commitments")
    site: str | None = None
    project: str | None = None
    retry_after: int | None = Field(default=None, description="seconds; also sent as Retry-After")


_DESCRIPTIONS = {
    400: "The body is not valid JSON",
    401: "The bearer token is missing or invalid (WWW-Authenticate says which)",
    403: "Not allowed: role, membership, account mapping or quota",
    404: "No such object, or one the caller may not see",
    409: "The request contradicts the current state, or reuses an Idempotency-Key",
    413: "The body or the script is over the size limit",
    422: "A field is invalid; `field` names it",
    429: "Too many requests; Retry-After says when to try again",
    502: "The site refused the gateway's credentials for the person's site account",
    503: "A site or the database is unavailable; Retry-After says when to try again",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for problem documents (their media type is set by ``openapi_problem_media_type``)."""
    return {status: {"model": Problem, "description": _DESCRIPTIONS[status]} for status in statuses}


#: What any authenticated operation may answer besides its own success.
AUTHENTICATED = problem_responses(401, 429, 503)


def openapi_problem_media_type(document: dict[str, Any]) -> dict[str, Any]:
    """FastAPI files every response model under the route's own media type; problems are application/problem+json."""
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for path in document.get("paths", {}).values():
        for operation in path.values():
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                for media_type in [m for m, body in content.items() if body.get("schema") == problem_ref]:
                    content[MEDIA_TYPE] = content.pop(media_type)
    return document


def problem(status: int, slug: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail, **extra}
    headers: dict[str, str] = {}
    if "retry_after" in extra:
        headers["Retry-After"] = str(extra["retry_after"])
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _antenna_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AntennaError)
    if isinstance(exc, InvalidToken):
        # The reason is logged and counted, never returned (identity contract).
        response = problem(401, exc.slug, exc.title, "the bearer token is missing or invalid")
        challenge = 'Bearer error="invalid_token"' if exc.extra.get("reason") != "missing" else 'Bearer realm="antenna"'
        response.headers["WWW-Authenticate"] = challenge
        return response
    # A site's refusal of our credentials (502) is the caller's to know: their account mapping or the
    # site's key is at fault, not the gateway; anything else at 5xx is ours and stays opaque.
    if exc.status >= 500 and not isinstance(exc, SiteUnavailable | SiteAuthFailed):
        log.error("internal error", extra={"error": exc.detail, "slug": exc.slug})
        return problem(500, "internal-error", "Internal error", "the gateway failed; the incident is logged")
    extra = {k: v for k, v in exc.extra.items() if k in _PUBLIC_EXTRA}
    if isinstance(exc, RateLimited | SiteUnavailable):
        extra["retry_after"] = exc.retry_after
    detail = exc.detail
    if isinstance(exc, InvalidRequest) and not detail.startswith(exc.field):
        detail = f"{exc.field}: {detail}"  # the same shape as validation errors, for clients that show only detail
    return problem(exc.status, exc.slug, exc.title, detail, **extra)


_PUBLIC_EXTRA = {"field", "available", "price", "unit", "limit", "minimum", "site", "project"}


_LOCATIONS = {"body", "query", "path", "header", "cookie"}


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": "value_error"}
    # The field is named as the caller wrote it (``state``, ``environment.FOO``), like the service's own
    # refusals name theirs; the location (body, query, path, header) is implied by the name.
    loc = [str(p) for p in first["loc"]]
    where = loc[0] if loc and loc[0] in _LOCATIONS else "body"
    if loc and loc[0] in _LOCATIONS:
        loc = loc[1:]
    field = ".".join(loc) or where
    if first["type"] == "json_invalid":
        return problem(400, "invalid-request", "Malformed request body", "the body is not valid JSON", field="body")
    slug = "invalid-job" if request.url.path == "/v1/jobs" and request.method == "POST" else "invalid-request"
    detail = f"{field}: {first['msg']}"
    if first["type"] == "extra_forbidden":
        detail = f"{field}: unknown field"
    return problem(422, slug, "Invalid job" if slug == "invalid-job" else "Invalid request", detail, field=field)


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slugs = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}
    extra = {"field": "body"} if exc.status_code == 413 else {}
    title = HTTPStatus(exc.status_code).phrase
    response = problem(exc.status_code, slugs.get(exc.status_code, "http-error"), title, str(exc.detail), **extra)
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:
        # RFC 9110: Allow lists every method of the resource; Starlette names only the first route's.
        response.headers["Allow"] = ", ".join(_allowed_methods(request))
    return response


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return sorted(methods)


def install(app: FastAPI) -> None:
    app.add_exception_handler(AntennaError, _antenna_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

"""Every error becomes an RFC 9457 problem document here, and only here."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.errors import AntennaError, InvalidRequest, InvalidToken, RateLimited, SiteUnavailable

log = logging.getLogger("antenna.api")
PROBLEM_BASE = "https://antenna.example/problems/"
MEDIA_TYPE = "application/problem+json"


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
    if exc.status >= 500 and not isinstance(exc, SiteUnavailable):
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
    if loc and loc[0] in _LOCATIONS:
        loc = loc[1:]
    field = ".".join(loc) or "body"
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
    return problem(exc.status_code, slugs.get(exc.status_code, "http-error"), title, str(exc.detail), **extra)


def install(app: FastAPI) -> None:
    app.add_exception_handler(AntennaError, _antenna_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

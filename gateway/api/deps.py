"""FastAPI dependencies, gathered here as ``Annotated`` aliases: the services and the principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.errors import InvalidToken, RateLimited
from gateway.identity import Principal, refusal_reason
from gateway.runtime import Runtime


async def runtime(request: Request) -> Runtime:
    # async although it awaits nothing: FastAPI runs a plain ``def`` dependency in its thread pool, a hop
    # (and a GIL hand-over) per request for one attribute read.
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(runtime)]


# Declares the scheme in the OpenAPI document; the refusal itself stays ours (a problem, never FastAPI's 403).
_bearer = HTTPBearer(auto_error=False, description="an access token of the Antenna's identity provider")


async def principal(
    request: Request,
    rt: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    token = credentials.credentials.strip() if credentials is not None else ""
    if not token:
        rt.metrics.token_refusals.labels("missing").inc()
        raise InvalidToken("no bearer token", reason="missing")
    try:
        who = await rt.verifier.verify(token)
    except InvalidToken as exc:
        reason = refusal_reason(exc)
        rt.metrics.token_refusals.labels(reason).inc()
        rt.log_refusal(reason, exc.detail)
        raise
    request.state.person = who.person
    await rt.rate_limit("requests", who.person, rt.settings.limits.requests_per_minute)
    return who


PrincipalDep = Annotated[Principal, Depends(principal)]


async def submitter(who: PrincipalDep, rt: RuntimeDep) -> Principal:
    """The principal, counted against the submission limit too (on the event loop, not in the thread pool)."""
    await rt.rate_limit("submissions", who.person, rt.settings.limits.submissions_per_minute)
    return who


SubmitterDep = Annotated[Principal, Depends(submitter)]

__all__ = ["PrincipalDep", "RateLimited", "RuntimeDep", "SubmitterDep"]

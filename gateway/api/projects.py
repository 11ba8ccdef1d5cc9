"""/v1/projects: balance, usage (JSON or CSV), allocations; /v1/people: site accounts; /v1/me."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response, status
from fastapi.responses import PlainTextResponse

from gateway.api.deps import PrincipalDep, RuntimeDep
from gateway.api.problems import AUTHENTICATED, problem_responses
from gateway.api.schemas import (
    AccountIn,
    AllocationIn,
    BalanceOut,
    MembershipOut,
    MeOut,
    ProjectBalanceOut,
    UsageLineOut,
    UsageOut,
    UsageQuery,
)

router = APIRouter(tags=["projects"], responses=AUTHENTICATED)
ProjectName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
SiteName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]


@router.get("/v1/me", response_model=MeOut)
def me(who: PrincipalDep, rt: RuntimeDep) -> MeOut:
    return MeOut(
        person=who.person,
        projects=[MembershipOut(project=p, role=str(r)) for p, r in sorted(who.projects.items())],
        roles=sorted(who.roles),
        site_accounts=rt.jobs.site_accounts(who.person),
    )


@router.get("/v1/projects/{project}/balance", response_model=ProjectBalanceOut, responses=problem_responses(404, 422))
def balance(project: ProjectName, who: PrincipalDep, rt: RuntimeDep) -> ProjectBalanceOut:
    now = rt.clock.now()
    return ProjectBalanceOut(project=project, balances=[BalanceOut.of(b, now) for b in rt.jobs.balances(who, project)])


@router.get(
    "/v1/projects/{project}/usage",
    response_model=UsageOut,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}, **problem_responses(404, 422)},
)
def usage(
    project: ProjectName,
    who: PrincipalDep,
    rt: RuntimeDep,
    query: Annotated[UsageQuery, Query()],
    accept: Annotated[str | None, Header()] = None,
) -> UsageOut | Response:
    lines = rt.jobs.usage(
        who,
        project,
        site=query.site,
        person=query.person,
        start=query.start,
        end=query.end,
        period_start=query.period_start,
    )
    if accept and "text/csv" in accept:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["at", "job_id", "person", "site", "unit", "period_start", "kind", "amount"])
        for line in lines:
            writer.writerow(
                [
                    line.effective_at.isoformat(),
                    line.job_id or "",
                    line.person or "",
                    line.site,
                    line.unit,
                    line.period_start.isoformat(),
                    line.kind,
                    format(line.amount, "f"),
                ]
            )
        return PlainTextResponse(out.getvalue(), media_type="text/csv")
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for line in lines:
        totals[f"{line.site}/{line.unit}"] += line.amount
    return UsageOut(project=project, lines=[UsageLineOut.of(line) for line in lines], totals=dict(totals))


@router.put(
    "/v1/projects/{project}/allocations/{site}",
    response_model=BalanceOut,
    responses=problem_responses(400, 403, 404, 409, 422),
)
def put_allocation(
    project: ProjectName, site: SiteName, body: AllocationIn, who: PrincipalDep, rt: RuntimeDep
) -> BalanceOut:
    balance = rt.jobs.allocate(
        who,
        project=project,
        site=site,
        unit=body.unit,
        amount=body.amount,
        start=body.start,
        end=body.end,
        project_account=body.project_account,
        reason=body.reason,
    )
    return BalanceOut.of(balance, rt.clock.now())


@router.put(
    "/v1/people/{person}/accounts/{site}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(400, 403, 404, 422),
)
def put_account(
    person: Annotated[str, Path(min_length=1, max_length=255)],
    site: SiteName,
    body: AccountIn,
    who: PrincipalDep,
    rt: RuntimeDep,
) -> Response:
    rt.jobs.map_account(who, person=person, site=site, account=body.account)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

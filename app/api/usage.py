"""Routes of usage reports: records (JSON or CSV), summaries by model, user and period in
a time zone, the cost report, tool logs; and the admins' summary across tenants."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response

from app.api.deps import AdminPrincipal, CurrentScope, DbSession, HeaderUserId, Pagination
from app.api.routing import ServiceRoute
from app.errors import error_responses
from app.schemas.common import Page, UtcDatetime
from app.schemas.tenants import TimeZoneName
from app.schemas.usage import (
    BudgetLine,
    BudgetRead,
    CostReport,
    TokenTotals,
    ToolLogRead,
    UsageBucket,
    UsageRecordRead,
    UsageSummary,
)
from app.services import reports as service
from app.services.budgets import budget_states

router = APIRouter(route_class=ServiceRoute, tags=["usage"])
_ONE = error_responses(401, 403, 404, 422)
TimeZone = Annotated[
    TimeZoneName, Query(description="An IANA time zone the periods are counted in")
]
_CSV_FIELDS = list(UsageRecordRead.model_fields)


def _filter(
    start: Annotated[UtcDatetime | None, Query(alias="from", description="At or after")] = None,
    end: Annotated[UtcDatetime | None, Query(alias="to", description="Before")] = None,
    user_id: Annotated[str | None, Query(max_length=255)] = None,
    conversation_id: uuid.UUID | None = None,
    run_id: uuid.UUID | None = None,
    model_id: Annotated[str | None, Query(max_length=100)] = None,
    api_key_id: Annotated[uuid.UUID | None, Query(description="The tenant key that ran it")] = None,
) -> service.UsageFilter:
    return service.UsageFilter(start, end, user_id, conversation_id, run_id, model_id, api_key_id)


Filter = Annotated[service.UsageFilter, Depends(_filter)]


@router.get(
    "/api/tenants/{tenant_id}/usage",
    response_model=Page[UsageRecordRead],
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}, **_ONE},
)
async def list_usage(
    scope: CurrentScope,
    session: DbSession,
    where: Filter,
    page: Pagination,
    accept: Annotated[str | None, Header()] = None,
) -> Any:
    """Usage records, newest first; CSV with `Accept: text/csv` (the same page)."""
    rows, total = await service.list_records(
        session, scope, where, limit=page.limit, offset=page.offset
    )
    items = [UsageRecordRead.model_validate(r) for r in rows]
    if accept is not None and "text/csv" in accept:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=_CSV_FIELDS)
        writer.writeheader()
        for item in items:
            writer.writerow(item.model_dump(mode="json"))
        return Response(
            out.getvalue(), media_type="text/csv", headers={"X-Total-Count": str(total)}
        )
    return Page(items=items, total=total)


async def _summary(
    session: DbSession, tenant_id: str | None, where: service.UsageFilter, group_by: str, tz: str
) -> UsageSummary:
    zone = service.time_zone(tz)
    dimensions, period = service.parse_group_by(group_by)
    rows, totals = await service.summary(session, tenant_id, where, dimensions, period, zone)
    return UsageSummary(
        group_by=[*dimensions, *([period] if period else [])],
        time_zone=zone.key,
        buckets=[UsageBucket.model_validate(r) for r in rows],
        totals=TokenTotals.model_validate(totals),
    )


GroupBy = Annotated[
    str,
    Query(
        pattern=service.GROUP_BY,
        description="Comma-separated: model, user, api_key, tenant, and one of hour, day, "
        "week, month",
    ),
]


@router.get("/api/tenants/{tenant_id}/usage/summary", response_model=UsageSummary, responses=_ONE)
async def usage_summary(
    scope: CurrentScope,
    session: DbSession,
    where: Filter,
    group_by: GroupBy = "day",
    tz: TimeZone = "UTC",
) -> UsageSummary:
    """Token counts by kind, run count and cost per bucket, and the totals. Periods are
    counted in `tz`; weeks start on Monday."""
    return await _summary(session, scope.tenant_id, where, group_by, tz)


@router.get(
    "/api/usage/summary", response_model=UsageSummary, responses=error_responses(401, 403, 422)
)
async def usage_summary_all_tenants(
    _: AdminPrincipal,
    session: DbSession,
    where: Filter,
    group_by: GroupBy = "tenant,day",
    tz: TimeZone = "UTC",
) -> UsageSummary:
    """The same summary across every tenant (admin keys only); `tenant` groups by tenant."""
    return await _summary(session, None, where, group_by, tz)


@router.get("/api/tenants/{tenant_id}/cost-report", response_model=CostReport, responses=_ONE)
async def cost_report(
    scope: CurrentScope, session: DbSession, where: Filter, tz: TimeZone = "UTC"
) -> CostReport:
    """Cost by model, by user and by day, with what the prompt cache saved."""
    report = await service.cost_report(session, scope, where, service.time_zone(tz))
    return CostReport.model_validate(report)


@router.get("/api/tenants/{tenant_id}/tool-logs", response_model=Page[ToolLogRead], responses=_ONE)
async def tool_logs(
    scope: CurrentScope,
    session: DbSession,
    page: Pagination,
    tool_name: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[str | None, Query(pattern="^(running|succeeded|failed)$")] = None,
    run_id: uuid.UUID | None = None,
    conversation_id: uuid.UUID | None = None,
    start: Annotated[UtcDatetime | None, Query(alias="from")] = None,
    end: Annotated[UtcDatetime | None, Query(alias="to")] = None,
) -> Page[ToolLogRead]:
    """The tenant's tool calls, newest first, with their durations."""
    where = service.ToolFilter(tool_name, status, run_id, conversation_id, start, end)
    rows, total = await service.tool_logs(
        session, scope, where, limit=page.limit, offset=page.offset
    )
    items = [
        ToolLogRead.model_validate(
            {
                **{k: getattr(r, k) for k in ToolLogRead.model_fields if k != "duration_ms"},
                "duration_ms": int((r.finished_at - r.started_at).total_seconds() * 1000)
                if r.finished_at is not None
                else None,
            }
        )
        for r in rows
    ]
    return Page(items=items, total=total)


@router.get("/api/tenants/{tenant_id}/budget", response_model=BudgetRead, responses=_ONE)
async def budget(
    scope: CurrentScope,
    session: DbSession,
    header_user: HeaderUserId,
    user_id: Annotated[str | None, Query(max_length=255, description="A user's budget too")] = None,
) -> BudgetRead:
    """This month's budgets (the tenant's, and the user's when one is named here or in
    X-User-ID): limit, spent, remaining, and when the month resets."""
    period, states = await budget_states(session, scope.tenant_id, user_id or header_user)
    return BudgetRead(
        time_zone=period.time_zone,
        period_start=period.start,
        resets_at=period.resets_at,
        budgets=[
            BudgetLine(
                budget=s.budget,
                limit_usd=s.limit_usd,
                spent_usd=s.spent_usd,
                remaining_usd=s.remaining_usd,
            )
            for s in states
        ],
    )

"""Usage reports: records, summaries by model, user and period in a time zone, the cost
report with the prompt cache's effect, tool logs. Every figure is summed in PostgreSQL
over NUMERIC, so a total equals the sum of its rows exactly."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import UnprocessableError
from app.models import ToolCall, UsageRecord, UsageRollup
from app.services.pagination import paginate
from app.services.scope import TenantScope
from app.utils.zones import zone_named

PERIODS = ("hour", "day", "week", "month")
DIMENSIONS = ("model", "user", "api_key", "tenant")
_TOKENS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
    "cache_read_tokens",
)


def time_zone(name: str) -> ZoneInfo:
    """An IANA time zone; 422 for anything else."""
    zone = zone_named(name)
    if zone is None:
        raise UnprocessableError(f"{name[:64]!r} is not an IANA time zone (e.g. Europe/Paris)")
    return zone


@dataclass(frozen=True)
class _Source:
    """Where usage is summed from: the records, or their rollup by tenant, UTC bucket and
    model (one row per bucket and model: what makes a summary over 100,000 records cost
    about what one over 1,000 does; see bench.usage)."""

    table: Any
    moment: Any
    runs: Any  # the aggregate that counts runs
    width_minutes: int | None = None  # of the rollup's buckets read

    def sums(self) -> list[Any]:
        return [
            *(func.coalesce(func.sum(getattr(self.table, t)), 0).label(t) for t in _TOKENS),
            func.coalesce(self.runs, 0).label("runs"),
            func.coalesce(func.sum(self.table.cost_usd), 0).label("cost_usd"),
        ]


_RECORDS = _Source(UsageRecord, UsageRecord.created_at, func.count().filter(UsageRecord.counts_run))
# Since 1980 every IANA zone's offset is a whole number of quarter hours.
_FIRST_YEAR = 1980


def _rollup(width_minutes: int) -> _Source:
    return _Source(UsageRollup, UsageRollup.bucket_start, func.sum(UsageRollup.runs), width_minutes)


def _on(minutes: int, *moments: datetime | None) -> bool:
    return all(m is None or m.timestamp() % (minutes * 60) == 0 for m in moments)


@lru_cache(maxsize=4096)
def _whole_hours(zone: ZoneInfo, year: int) -> bool:
    """The zone's offset is a whole number of hours all year (sampled weekly: no
    offset has lasted less than a week)."""
    moment = datetime(year, 1, 1, tzinfo=UTC)
    while moment.year == year:
        offset = moment.astimezone(zone).utcoffset()
        if offset is None or offset.total_seconds() % 3600:
            return False
        moment += timedelta(days=7)
    return True


def _hour_buckets_fit(zone: ZoneInfo, start: datetime | None, end: datetime | None) -> bool:
    first = start.year if start is not None else _FIRST_YEAR
    last = end.year if end is not None else datetime.now(UTC).year + 1
    return all(_whole_hours(zone, year) for year in range(max(first, _FIRST_YEAR), last + 1))


@dataclass(frozen=True)
class UsageFilter:
    start: datetime | None = None
    end: datetime | None = None
    user_id: str | None = None
    conversation_id: uuid.UUID | None = None
    run_id: uuid.UUID | None = None
    model_id: str | None = None
    api_key_id: uuid.UUID | None = None

    def source(self, dimensions: Iterable[str] = (), zone: ZoneInfo | None = None) -> _Source:
        """The rollup when it holds the answer: grouped and filtered only by what it keeps
        (tenant, model, time), over a period that starts and ends on its buckets. Hour
        buckets when the zone's periods are whole hours of UTC (or no period is asked),
        else quarter-hour buckets (every zone's are); else the records."""
        narrower = (self.user_id, self.conversation_id, self.run_id, self.api_key_id)
        if any(v is not None for v in narrower) or not set(dimensions) <= {"model", "tenant"}:
            return _RECORDS
        if _on(60, self.start, self.end) and (
            zone is None or _hour_buckets_fit(zone, self.start, self.end)
        ):
            return _rollup(60)
        return _rollup(15) if _on(15, self.start, self.end) else _RECORDS

    def apply(self, query: Any, source: _Source = _RECORDS) -> Any:
        """`query` (a select over the source) narrowed to these filters."""
        table = source.table
        if source.width_minutes is not None:
            query = query.where(UsageRollup.width_minutes == source.width_minutes)
        return _narrowed(
            query,
            (source.moment, self.start, self.end),
            (table.model_id, self.model_id),
            *(
                (getattr(table, name), value)
                for name, value in (
                    ("user_id", self.user_id),
                    ("conversation_id", self.conversation_id),
                    ("run_id", self.run_id),
                    ("api_key_id", self.api_key_id),
                )
                if value is not None  # the rollup has none of these columns
            ),
        )


def _narrowed(query: Any, period: tuple[Any, datetime | None, datetime | None], *equal: Any) -> Any:
    """`query` with the filters that are given: the period [start, end) on its column, and
    each (column, value) pair as column = value."""
    moment, start, end = period
    if start is not None:
        query = query.where(moment >= start)
    if end is not None:
        query = query.where(moment < end)
    for column, value in equal:
        if value is not None:
            query = query.where(column == value)
    return query


async def list_records(
    session: AsyncSession, scope: TenantScope, where: UsageFilter, *, limit: int, offset: int
) -> tuple[list[UsageRecord], int]:
    query = where.apply(scope.select(UsageRecord)).order_by(
        UsageRecord.created_at.desc(), UsageRecord.id
    )
    return await paginate(session, query, limit=limit, offset=offset)


_DIMENSION = f"(?:{'|'.join(DIMENSIONS)})"
_PERIOD = f"(?:{'|'.join(PERIODS)})"
# Names joined by commas, at most one of them a period (a dimension named twice counts once).
GROUP_BY = f"^(?:(?:{_DIMENSION},)*{_PERIOD}(?:,{_DIMENSION})*|{_DIMENSION}(?:,{_DIMENSION})*)$"
_GROUP_BY = re.compile(GROUP_BY)


def parse_group_by(raw: str) -> tuple[list[str], str | None]:
    """`model,user,day` → (dimensions, period)."""
    if not _GROUP_BY.fullmatch(raw):
        raise UnprocessableError(
            f"group_by takes {', '.join(DIMENSIONS)} and at most one of {', '.join(PERIODS)}, "
            "joined by commas"
        )
    parts = raw.split(",")
    periods = [p for p in parts if p in PERIODS]
    return list(dict.fromkeys(p for p in parts if p in DIMENSIONS)), periods[0] if periods else None


# Each dimension's column name (the same in the records and the rollup) and field.
_FIELDS = {"model": "model_id", "user": "user_id", "tenant": "tenant_id", "api_key": "api_key_id"}


async def summary(
    session: AsyncSession,
    tenant_id: str | None,
    where: UsageFilter,
    dimensions: list[str],
    period: str | None,
    zone: ZoneInfo,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Buckets (each dimension and the period's local start), and the totals. With
    `tenant_id` None (an admin's view), across every tenant."""
    source = where.source(dimensions, zone if period is not None else None)
    keys: list[Any] = [getattr(source.table, _FIELDS[d]).label(_FIELDS[d]) for d in dimensions]
    if period is not None:
        local = func.timezone(zone.key, source.moment)
        keys.append(func.date_trunc(period, local).label("period_start"))
    query = where.apply(select(*keys, *source.sums()), source)
    if tenant_id is not None:
        query = query.where(source.table.tenant_id == tenant_id)
    # Enough memory to group in a hash table: with the default 4 MB, 100,000 records are
    # sorted on disk first (bench.usage, p50 for 100,000 records: 239 ms without, 176 with).
    await session.execute(text("SET LOCAL work_mem = '64MB'"))
    if keys:
        query = query.group_by(*keys).order_by(*keys)
    rows = [dict(row._mapping) for row in await session.execute(query)]
    for row in rows:
        if row.get("period_start") is not None:
            row["period_start"] = row["period_start"].replace(tzinfo=zone)
    # Each run is counted on one record: the buckets' sums add up to the totals exactly.
    totals: dict[str, Any] = {key: sum(r[key] for r in rows) for key in (*_TOKENS, "runs")}
    totals["cost_usd"] = sum((Decimal(r["cost_usd"]) for r in rows), Decimal(0))
    return rows, totals


async def cost_report(
    session: AsyncSession, scope: TenantScope, where: UsageFilter, zone: ZoneInfo
) -> dict[str, Any]:
    """Cost by model, by user and by local day, and what the cache saved."""

    async def by(source: _Source, key: Any) -> list[dict[str, Any]]:
        query = where.apply(
            select(
                key.label("key"),
                func.coalesce(func.sum(source.table.cost_usd), 0).label("cost_usd"),
                func.coalesce(source.runs, 0).label("runs"),
            ),
            source,
        ).where(source.table.tenant_id == scope.tenant_id)
        rows = await session.execute(query.group_by(key).order_by(key))
        return [
            {
                "key": str(r.key) if r.key is not None else "(none)",
                "cost_usd": r.cost_usd,
                "runs": r.runs,
            }
            for r in rows
        ]

    source = where.source(["model"], zone)
    local_day = func.to_char(func.timezone(zone.key, source.moment), "YYYY-MM-DD")
    by_model = await by(source, source.table.model_id)
    return {
        "time_zone": zone.key,
        "by_model": by_model,
        "by_user": await by(_RECORDS, UsageRecord.user_id),
        "by_day": await by(source, local_day),
        "total_usd": sum((line["cost_usd"] for line in by_model), Decimal(0)),
        "cache": await _cache_effect(session, scope, where, source),
    }


async def _cache_effect(
    session: AsyncSession, scope: TenantScope, where: UsageFilter, source: _Source
) -> dict[str, Any]:
    """What cache reads saved against the same tokens as uncached input (each record at
    the prices it was charged), and the share of input tokens that were cache reads."""
    table = source.table
    query = where.apply(
        select(
            func.coalesce(func.sum(table.cache_read_tokens), 0).label("read"),
            func.coalesce(
                func.sum(
                    table.input_tokens
                    + table.cache_creation_5m_tokens
                    + table.cache_creation_1h_tokens
                    + table.cache_read_tokens
                ),
                0,
            ).label("all_input"),
            func.coalesce(func.sum(table.cache_saved_usd), 0).label("saved"),
        ),
        source,
    ).where(table.tenant_id == scope.tenant_id)
    row = (await session.execute(query)).one()
    read, all_input = int(row.read), int(row.all_input)
    return {
        "cache_read_tokens": read,
        "saved_usd": Decimal(row.saved),
        "hit_ratio": round(read / all_input, 6) if all_input else 0.0,
    }


@dataclass(frozen=True)
class ToolFilter:
    name: str | None = None
    status: str | None = None
    run_id: uuid.UUID | None = None
    conversation_id: uuid.UUID | None = None
    start: datetime | None = None
    end: datetime | None = None


async def tool_logs(
    session: AsyncSession, scope: TenantScope, where: ToolFilter, *, limit: int, offset: int
) -> tuple[list[ToolCall], int]:
    query = _narrowed(
        scope.select(ToolCall),
        (ToolCall.started_at, where.start, where.end),
        (ToolCall.name, where.name),
        (ToolCall.status, where.status),
        (ToolCall.run_id, where.run_id),
        (ToolCall.conversation_id, where.conversation_id),
    )
    query = query.order_by(ToolCall.started_at.desc(), ToolCall.id)
    return await paginate(session, query, limit=limit, offset=offset)

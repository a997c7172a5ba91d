"""Usage reports and tool logs as the API shows them: money as decimal strings."""

from __future__ import annotations

import uuid
from datetime import datetime

from app.schemas.common import ReadSchema, Schema
from app.schemas.runs import Usd


class TokenTotals(Schema):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_5m_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    cache_read_tokens: int = 0
    runs: int = 0
    cost_usd: Usd


class UsageRecordRead(ReadSchema):
    id: uuid.UUID
    run_id: uuid.UUID
    conversation_id: uuid.UUID
    user_id: str | None
    api_key_id: uuid.UUID | None
    model_id: str
    provider_model: str
    pricing: str
    input_tokens: int
    output_tokens: int
    cache_creation_5m_tokens: int
    cache_creation_1h_tokens: int
    cache_read_tokens: int
    cost_usd: Usd
    cache_saved_usd: Usd
    created_at: datetime


class UsageBucket(TokenTotals):
    """One group: the period it starts (in the asked time zone) and/or its model, user,
    API key or tenant, as grouped."""

    period_start: datetime | None = None
    model_id: str | None = None
    user_id: str | None = None
    api_key_id: uuid.UUID | None = None
    tenant_id: str | None = None


class UsageSummary(Schema):
    group_by: list[str]
    time_zone: str
    buckets: list[UsageBucket]
    totals: TokenTotals


class CacheEffect(Schema):
    """What the prompt cache did: reads priced as uncached input would have cost, less
    what they cost, and the share of input tokens read from the cache."""

    cache_read_tokens: int
    saved_usd: Usd
    hit_ratio: float


class CostLine(Schema):
    key: str
    cost_usd: Usd
    runs: int


class CostReport(Schema):
    time_zone: str
    by_model: list[CostLine]
    by_user: list[CostLine]
    by_day: list[CostLine]
    total_usd: Usd
    cache: CacheEffect


class ToolLogRead(ReadSchema):
    id: uuid.UUID
    run_id: uuid.UUID
    conversation_id: uuid.UUID
    tool_use_id: str
    name: str
    mcp_server: str | None
    status: str
    is_error: bool
    parent_tool_use_id: str | None
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None


class BudgetLine(Schema):
    budget: str  # tenant | user
    limit_usd: Usd
    spent_usd: Usd
    remaining_usd: Usd


class BudgetRead(Schema):
    time_zone: str
    period_start: datetime
    resets_at: datetime
    budgets: list[BudgetLine]

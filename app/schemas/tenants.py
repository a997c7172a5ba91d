"""Request and response bodies of tenants and their API keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints

from app.schemas.common import (
    DecimalText,
    Name,
    NoNul,
    PatchSchema,
    ReadSchema,
    Schema,
    UserId,
    documented_as,
)
from app.schemas.models import ModelId
from app.utils.zones import zone_named

TenantId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
TenantStatus = Literal["active", "inactive"]
SystemPrompt = Annotated[str, StringConstraints(max_length=100_000), NoNul]
MaxConcurrentRuns = Annotated[int, Field(ge=1, le=1000)]
MaxTurns = Annotated[int, Field(ge=1, le=1000)]
# The built-in tools a tenant's agent can be given (DESIGN §8: a closed, explicit set).
AgentTool = Literal[
    "Read", "Write", "Edit", "Glob", "Grep", "Skill", "Agent", "Bash", "WebFetch", "WebSearch"
]
AgentTools = Annotated[list[AgentTool], Field(max_length=10)]
StorageQuota = Annotated[int, Field(ge=0, le=2**50)]
DEFAULT_STORAGE_QUOTA = 1024**3
Budget = Annotated[Decimal, DecimalText(places=2, maximum=1_000_000_000)]


def _iana(name: str) -> str:
    if zone_named(name) is None:
        raise ValueError("must be an IANA time zone, e.g. Europe/Paris")
    return name


# Documented as the `TimeZone` enum app.api.openapi adds: every name ZONES holds.
TimeZoneName = Annotated[
    str,
    Field(max_length=64),
    AfterValidator(_iana),
    documented_as("TimeZone"),
]


class TenantSettings(Schema):
    """Per-tenant limits and switches."""

    max_concurrent_runs: MaxConcurrentRuns = 5
    max_turns: MaxTurns = 50
    monthly_budget_usd: Budget | None = Field(
        None, description="Spending cap per calendar month, in USD; null for none."
    )
    user_monthly_budget_usd: Budget | None = Field(
        None, description="Each user's spending cap per calendar month, in USD; null for none."
    )
    user_budgets: dict[UserId, Budget] = Field(
        default_factory=dict,
        max_length=1000,
        description="Monthly caps for particular users, over the default.",
    )
    time_zone: TimeZoneName = Field(
        "UTC", description="The IANA time zone budget months are counted in."
    )
    run_reservation_usd: Budget = Field(
        Decimal("1.00"),
        description="What a run without its own max_cost_usd holds of a budget while it is "
        "queued or running, so concurrent runs cannot together overshoot it.",
    )
    bash_enabled: bool = Field(
        False, description="Offer the Bash tool (run in the agent's jail and the CLI's sandbox)."
    )
    web_fetch_enabled: bool = Field(
        False, description="Offer WebFetch (public addresses only, checked on every connection)."
    )
    web_search_enabled: bool = Field(False, description="Offer WebSearch.")
    storage_quota_bytes: StorageQuota | None = Field(
        DEFAULT_STORAGE_QUOTA,
        description="The most the tenant's current workspace files may hold together, in "
        "bytes (earlier versions not counted); null for no limit.",
    )
    tools: AgentTools | None = Field(
        None,
        description="Narrows the agent's built-in tools to these; null for all it is allowed "
        "(Read, Write, Edit, Glob, Grep, Skill, Agent, and Bash, WebFetch, WebSearch where "
        "enabled). Naming a tool does not enable a switched-off one.",
    )


class TenantSettingsUpdate(PatchSchema):
    nullable_fields = frozenset(
        {"monthly_budget_usd", "user_monthly_budget_usd", "tools", "storage_quota_bytes"}
    )

    max_concurrent_runs: MaxConcurrentRuns | None = None
    max_turns: MaxTurns | None = None
    monthly_budget_usd: Budget | None = None
    user_monthly_budget_usd: Budget | None = None
    user_budgets: dict[UserId, Budget] | None = Field(default=None, max_length=1000)
    time_zone: TimeZoneName | None = None
    run_reservation_usd: Budget | None = None
    bash_enabled: bool | None = None
    web_fetch_enabled: bool | None = None
    web_search_enabled: bool | None = None
    storage_quota_bytes: StorageQuota | None = None
    tools: AgentTools | None = None


class TenantCreate(Schema):
    tenant_id: TenantId
    name: Name
    system_prompt: SystemPrompt | None = None
    default_model_id: ModelId | None = Field(
        None, description="An active catalog model; the service default when omitted."
    )
    status: TenantStatus = "active"
    settings: TenantSettings = Field(default_factory=TenantSettings)


class TenantUpdate(PatchSchema):
    """Fields left out keep their value; `settings` is merged key by key."""

    nullable_fields = frozenset({"system_prompt"})

    name: Name | None = None
    system_prompt: SystemPrompt | None = None
    default_model_id: ModelId | None = None
    status: TenantStatus | None = None
    settings: TenantSettingsUpdate | None = None


class TenantRead(ReadSchema):
    tenant_id: str
    name: str
    system_prompt: str | None
    default_model_id: str
    status: TenantStatus
    settings: TenantSettings
    created_at: datetime
    updated_at: datetime


class ApiKeyCreate(Schema):
    name: Name


class ApiKeyRead(ReadSchema):
    id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None


class ApiKeyCreated(ReadSchema):
    """The new key; `key` is shown only in this response."""

    id: uuid.UUID
    key: str
    prefix: str
    name: str
    created_at: datetime

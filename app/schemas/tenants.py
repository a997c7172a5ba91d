"""Request and response bodies of tenants and their API keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from app.schemas.common import Name, PatchSchema, ReadSchema, SafeStr, Schema
from app.schemas.models import ModelId

TenantId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
TenantStatus = Literal["active", "inactive"]
SystemPrompt = Annotated[SafeStr, StringConstraints(max_length=100_000)]
MaxConcurrentRuns = Annotated[int, Field(ge=1, le=1000)]
MaxTurns = Annotated[int, Field(ge=1, le=1000)]
Budget = Annotated[
    Decimal, Field(ge=0, le=1_000_000_000, max_digits=18, decimal_places=2, allow_inf_nan=False)
]


class TenantSettings(Schema):
    """Per-tenant limits and switches."""

    max_concurrent_runs: MaxConcurrentRuns = 5
    max_turns: MaxTurns = 50
    monthly_budget_usd: Budget | None = Field(
        None, description="Spending cap per calendar month, in USD; null for none."
    )
    bash_enabled: bool = False


class TenantSettingsUpdate(PatchSchema):
    nullable_fields = frozenset({"monthly_budget_usd"})

    max_concurrent_runs: MaxConcurrentRuns | None = None
    max_turns: MaxTurns | None = None
    monthly_budget_usd: Budget | None = None
    bash_enabled: bool | None = None


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

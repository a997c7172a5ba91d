"""Request and response bodies of conversations and their messages."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from app.schemas.common import JsonObject, NoNul, PatchSchema, ReadSchema, Schema, UserId
from app.schemas.models import ModelId

Title = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500), NoNul]
ConversationStatus = Literal["active", "archived"]


class ConversationCreate(Schema):
    title: Title | None = None
    model_id: ModelId | None = Field(None, description="Defaults to the tenant's default model.")
    user_id: UserId | None = Field(None, description="Defaults to the X-User-ID header.")
    metadata: JsonObject = Field(default_factory=dict)


class ConversationUpdate(PatchSchema):
    nullable_fields = frozenset({"title"})

    title: Title | None = None
    model_id: ModelId | None = None
    metadata: JsonObject | None = None


class ConversationRead(ReadSchema):
    conversation_id: uuid.UUID
    tenant_id: str
    user_id: str | None
    title: str | None
    model_id: str
    status: ConversationStatus
    metadata: dict[str, Any] = Field(validation_alias="metadata_")
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None


class MessageRead(ReadSchema):
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    run_id: uuid.UUID | None
    seq: int
    role: str
    content: list[dict[str, Any]]
    parent_tool_use_id: str | None
    created_at: datetime

"""Tenant secrets and MCP servers as the API takes and shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from app.schemas.common import ReadSchema, SafeStr, Schema


class SecretWrite(Schema):
    value: Annotated[SafeStr, StringConstraints(min_length=1, max_length=64 * 1024)] = Field(
        description="Write-only: never shown again, in any response, log or event"
    )


class SecretRead(ReadSchema):
    name: str
    created_at: datetime
    updated_at: datetime

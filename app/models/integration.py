"""What a tenant connects its agent to: encrypted secrets, and MCP servers (remote,
STDIO, built-in, or generated from an OpenAPI document)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TimestampMixin

MCP_TYPES = ("http", "sse", "stdio", "builtin", "openapi")
MCP_STATUSES = ("active", "disabled")


class TenantSecret(TimestampMixin, Base):
    __tablename__ = "tenant_secrets"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.tenant_id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Fernet token: the value encrypted with the first of the service's secret keys.
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)


class McpServer(TimestampMixin, Base):
    __tablename__ = "mcp_servers"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        CheckConstraint(f"type IN {MCP_TYPES!r}", name="type"),
        CheckConstraint(f"status IN {MCP_STATUSES!r}", name="status"),
    )

    server_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.tenant_id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(16))
    # Type-specific: url and headers; command, args and env; builtin name; OpenAPI spec.
    config: Mapped[dict[str, Any]]
    # Tool names or globs the agent is given; None: all of them.
    allowed_tools: Mapped[list[str] | None]
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="active")
    timeout_seconds: Mapped[float] = mapped_column(default=30.0)

"""Conversations and their message log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TimestampMixin


class Conversation(TimestampMixin, Base):
    __tablename__ = "conversations"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'archived')", name="status"),
        # The list endpoint's order, per tenant (and per user of a tenant).
        Index("ix_conversations_tenant_updated", "tenant_id", "updated_at", "conversation_id"),
        Index(
            "ix_conversations_tenant_user_updated",
            "tenant_id",
            "user_id",
            "updated_at",
            "conversation_id",
        ),
    )

    conversation_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.tenant_id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(String(255))
    title: Mapped[str | None] = mapped_column(String(500))
    model_id: Mapped[str] = mapped_column(
        ForeignKey("models.model_id", ondelete="RESTRICT"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="active")
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    sdk_session_id: Mapped[str | None] = mapped_column(String(100))
    archived_at: Mapped[datetime | None]
    # Up by one with every version of any of its workspace files (see services/workspace).
    files_version: Mapped[int] = mapped_column(BigInteger, server_default="0")


class ConversationCount(Base):
    """How many conversations a tenant has in each status; kept by a database trigger
    (migration 0002), read for list totals. Never written by the application."""

    __tablename__ = "conversation_counts"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.tenant_id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("conversation_id", "seq"),)

    message_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.tenant_id", ondelete="CASCADE"), index=True
    )
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.conversation_id", ondelete="CASCADE")
    )
    run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("runs.run_id", ondelete="CASCADE"), index=True
    )
    # Position in the conversation's log: 1, 2, 3…
    seq: Mapped[int]
    role: Mapped[str] = mapped_column(String(32))
    content: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    parent_tool_use_id: Mapped[str | None] = mapped_column(String(100))
    sdk_uuid: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

"""Agent runs and what they record: the event log, tool calls and token usage."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Numeric,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSON
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base

ACTIVE_RUN_STATUSES = ("queued", "running")


class TokenCounts:
    """The token counts every usage-bearing row carries, by kind."""

    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_creation_5m_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_creation_1h_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(default=Decimal(0))


class Run(TokenCounts, Base):
    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')",
            name="status",
        ),
        # One run at a time per conversation, whatever races the API loses.
        Index(
            "uq_runs_one_active_per_conversation",
            "conversation_id",
            unique=True,
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
        Index("ix_runs_tenant_created", "tenant_id", "created_at"),
        Index(
            "ix_runs_active_node",
            "node_id",
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )

    run_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.tenant_id", ondelete="CASCADE"))
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.conversation_id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str | None] = mapped_column(String(255))
    # The tenant key that started it (None for an admin key).
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    model_id: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    user_input: Mapped[str] = mapped_column(Text)
    executor: Mapped[dict[str, Any] | None]
    preferred_skills: Mapped[list[str] | None]
    # The skill a `/command` ran, and every skill the run had: {name: version}.
    command: Mapped[str | None] = mapped_column(String(64))
    skill_versions: Mapped[dict[str, Any] | None]
    # The node that runs it (its events, its cancel, its agent process live there).
    node_id: Mapped[str | None] = mapped_column(String(100))
    # The queue's job that carries it to a node (procrastinate_jobs.id).
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    # What it holds of its budgets while queued or running (its cost replaces it after).
    reserved_usd: Mapped[Decimal | None]
    # Names only: request tokens are secrets, held in memory for the run, never stored.
    token_names: Mapped[list[str] | None]
    session_id: Mapped[str | None] = mapped_column(String(100))
    result: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    num_turns: Mapped[int] = mapped_column(default=0)
    duration_ms: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class RunEvent(Base):
    """Every SSE event of a run, by seq: the log that re-attaching clients replay."""

    __tablename__ = "run_events"

    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.tenant_id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(String(32))
    # json, not jsonb: written fast, read back whole, never queried inside.
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ToolCall(Base):
    __tablename__ = "tool_calls"
    __table_args__ = (
        CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="status"),
        Index("uq_tool_calls_run_tool_use", "run_id", "tool_use_id", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.tenant_id", ondelete="CASCADE"), index=True
    )
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"))
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.conversation_id", ondelete="CASCADE")
    )
    tool_use_id: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    # The MCP server of an `mcp__{server}__{tool}` call.
    mcp_server: Mapped[str | None] = mapped_column(String(64))
    input: Mapped[dict[str, Any]]
    output_preview: Mapped[str | None] = mapped_column(Text)
    is_error: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(16), default="running")
    parent_tool_use_id: Mapped[str | None] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]


class UsageRecord(TokenCounts, Base):
    """What one model served one run, priced from the catalog."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_tenant_created", "tenant_id", "created_at"),
        Index("ix_usage_records_tenant_user_id_created", "tenant_id", "user_id", "created_at"),
        Index(
            "ix_usage_records_tenant_api_key_id_created", "tenant_id", "api_key_id", "created_at"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.tenant_id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(String(255))
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.conversation_id", ondelete="CASCADE")
    )
    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("runs.run_id", ondelete="CASCADE"), index=True
    )
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    # The catalog model it was priced as, and the name the provider served it under.
    model_id: Mapped[str] = mapped_column(String(100))
    provider_model: Mapped[str] = mapped_column(String(200))
    # How the price was found: `exact` (the catalog lists the served model), `family`
    # (a model of its family), `run_model` (none: priced as the run's model, flagged).
    pricing: Mapped[str] = mapped_column(String(16), default="exact", server_default="exact")
    # True on exactly one record of each run (its own model's): runs are counted by
    # summing it, with no distinct count over run ids.
    counts_run: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    # What its cache reads saved against uncached input, at the prices it was charged.
    cache_saved_usd: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class UsageRollup(Base):
    """Usage records summed by tenant, UTC bucket (of 60 and of 15 minutes) and model;
    kept by a database trigger (migration 0008), read by summaries. Never written by the
    application."""

    __tablename__ = "usage_rollups"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.tenant_id", ondelete="CASCADE"), primary_key=True
    )
    width_minutes: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(primary_key=True)
    model_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    records: Mapped[int] = mapped_column(BigInteger)
    runs: Mapped[int] = mapped_column(BigInteger)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_creation_5m_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_creation_1h_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(24, 6))
    cache_saved_usd: Mapped[Decimal] = mapped_column(Numeric(24, 6))


class SdkSessionEntry(Base):
    """SDK transcripts (the SessionStore): one row per JSONL entry, in append order."""

    __tablename__ = "sdk_session_entries"
    __table_args__ = (
        Index("ix_sdk_session_entries_key", "project_key", "session_id", "subpath", "id"),
        Index(
            "uq_sdk_session_entries_uuid",
            "project_key",
            "session_id",
            "subpath",
            "uuid",
            unique=True,
            postgresql_where=text("uuid IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    # The tenant id for the service's own sessions.
    project_key: Mapped[str] = mapped_column(String(255))
    session_id: Mapped[str] = mapped_column(String(255))
    # "" for the main transcript, e.g. "subagents/agent-x" for a sub-agent's.
    subpath: Mapped[str] = mapped_column(String(255), default="")
    uuid: Mapped[str | None] = mapped_column(String(100))
    entry: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

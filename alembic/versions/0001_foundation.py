"""Foundation: tenants, API keys, the models catalog (seeded), conversations, messages.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence
from decimal import Decimal

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _model(
    model_id: str,
    display_name: str,
    anthropic_id: str,
    price_input: str,
    price_output: str,
    status: str = "active",
) -> dict[str, object]:
    """A catalog row at Anthropic's published prices (USD per million tokens).

    Prompt caching is priced from the input price: a 5-minute cache write costs
    1.25x, a 1-hour write 2x, and a cache read 0.1x.
    """
    base = Decimal(price_input)
    return {
        "model_id": model_id,
        "display_name": display_name,
        "anthropic_model_id": anthropic_id,
        "bedrock_model_id": f"us.anthropic.{anthropic_id}-v1:0",
        "price_input": base,
        "price_output": Decimal(price_output),
        "price_cache_write_5m": base * Decimal("1.25"),
        "price_cache_write_1h": base * 2,
        "price_cache_read": base / 10,
        "context_window": 200_000,
        "status": status,
    }


SEED_MODELS = [
    _model("claude-opus-4-5", "Claude Opus 4.5", "claude-opus-4-5-20251101", "5", "25"),
    _model("claude-opus-4-1", "Claude Opus 4.1", "claude-opus-4-1-20250805", "15", "75"),
    _model("claude-sonnet-4-5", "Claude Sonnet 4.5", "claude-sonnet-4-5-20250929", "3", "15"),
    _model("claude-sonnet-4", "Claude Sonnet 4", "claude-sonnet-4-20250514", "3", "15"),
    _model("claude-haiku-4-5", "Claude Haiku 4.5", "claude-haiku-4-5-20251001", "1", "5"),
    _model(
        "claude-3-5-haiku",
        "Claude Haiku 3.5",
        "claude-3-5-haiku-20241022",
        "0.80",
        "4",
        status="deprecated",
    ),
]


def upgrade() -> None:
    models = op.create_table(
        "models",
        sa.Column("model_id", sa.String(length=100), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("bedrock_model_id", sa.String(length=200), nullable=True),
        sa.Column("anthropic_model_id", sa.String(length=200), nullable=True),
        sa.Column("price_input", sa.Numeric(precision=18, scale=6), nullable=False),
        sa.Column("price_output", sa.Numeric(precision=18, scale=6), nullable=False),
        sa.Column("price_cache_write_5m", sa.Numeric(precision=18, scale=6), nullable=False),
        sa.Column("price_cache_write_1h", sa.Numeric(precision=18, scale=6), nullable=False),
        sa.Column("price_cache_read", sa.Numeric(precision=18, scale=6), nullable=False),
        sa.Column("context_window", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("status IN ('active', 'deprecated')", name=op.f("ck_models_status")),
        sa.PrimaryKeyConstraint("model_id", name=op.f("pk_models")),
    )
    op.create_table(
        "tenants",
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("default_model_id", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("settings", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("status IN ('active', 'inactive')", name=op.f("ck_tenants_status")),
        sa.CheckConstraint(
            "tenant_id ~ '^[a-z0-9][a-z0-9-]{1,62}$'", name=op.f("ck_tenants_tenant_id_slug")
        ),
        sa.ForeignKeyConstraint(
            ["default_model_id"],
            ["models.model_id"],
            name=op.f("fk_tenants_default_model_id_models"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenants")),
    )
    op.create_index(
        op.f("ix_tenants_default_model_id"), "tenants", ["default_model_id"], unique=False
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.tenant_id"],
            name=op.f("fk_api_keys_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
    )
    op.create_index(op.f("ix_api_keys_prefix"), "api_keys", ["prefix"], unique=False)
    op.create_index(op.f("ix_api_keys_tenant_id"), "api_keys", ["tenant_id"], unique=False)
    op.create_table(
        "conversations",
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("title", sa.String(length=500), nullable=True),
        sa.Column("model_id", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("sdk_session_id", sa.String(length=100), nullable=True),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('active', 'archived')", name=op.f("ck_conversations_status")
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.model_id"],
            name=op.f("fk_conversations_model_id_models"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.tenant_id"],
            name=op.f("fk_conversations_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_conversations")),
    )
    op.create_index(op.f("ix_conversations_model_id"), "conversations", ["model_id"], unique=False)
    op.create_index(
        "ix_conversations_tenant_updated",
        "conversations",
        ["tenant_id", "updated_at", "conversation_id"],
        unique=False,
    )
    op.create_index(
        "ix_conversations_tenant_user_updated",
        "conversations",
        ["tenant_id", "user_id", "updated_at", "conversation_id"],
        unique=False,
    )
    op.create_table(
        "messages",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("content", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("parent_tool_use_id", sa.String(length=100), nullable=True),
        sa.Column("sdk_uuid", sa.String(length=100), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.conversation_id"],
            name=op.f("fk_messages_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.tenant_id"],
            name=op.f("fk_messages_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_messages")),
        sa.UniqueConstraint("conversation_id", "seq", name=op.f("uq_messages_conversation_id_seq")),
    )
    op.create_index(op.f("ix_messages_tenant_id"), "messages", ["tenant_id"], unique=False)
    op.bulk_insert(models, SEED_MODELS)


def downgrade() -> None:
    op.drop_index(op.f("ix_messages_tenant_id"), table_name="messages")
    op.drop_table("messages")
    op.drop_index("ix_conversations_tenant_user_updated", table_name="conversations")
    op.drop_index("ix_conversations_tenant_updated", table_name="conversations")
    op.drop_index(op.f("ix_conversations_model_id"), table_name="conversations")
    op.drop_table("conversations")
    op.drop_index(op.f("ix_api_keys_tenant_id"), table_name="api_keys")
    op.drop_index(op.f("ix_api_keys_prefix"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_index(op.f("ix_tenants_default_model_id"), table_name="tenants")
    op.drop_table("tenants")
    op.drop_table("models")

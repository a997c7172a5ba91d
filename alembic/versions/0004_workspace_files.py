"""Workspace files and their versions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Goes up by one with every version of any of the conversation's files: a node that
    # synced the workspace at this number has nothing to fetch.
    op.add_column(
        "conversations",
        sa.Column("files_version", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.create_table(
        "workspace_files",
        sa.Column("file_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("mime_type", sa.String(length=255), nullable=False),
        sa.Column("presented", sa.Boolean(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
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
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.conversation_id"],
            name=op.f("fk_workspace_files_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.tenant_id"],
            name=op.f("fk_workspace_files_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("file_id", name=op.f("pk_workspace_files")),
        sa.UniqueConstraint(
            "conversation_id", "path", name=op.f("uq_workspace_files_conversation_id_path")
        ),
    )
    op.create_index(
        op.f("ix_workspace_files_tenant_id"), "workspace_files", ["tenant_id"], unique=False
    )
    op.create_table(
        "workspace_file_versions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("file_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=True),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "source IN ('user_upload', 'agent_created', 'agent_modified', 'agent_deleted', 'user_deleted')",
            name=op.f("ck_workspace_file_versions_source"),
        ),
        sa.ForeignKeyConstraint(
            ["file_id"],
            ["workspace_files.file_id"],
            name=op.f("fk_workspace_file_versions_file_id_workspace_files"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.run_id"],
            name=op.f("fk_workspace_file_versions_run_id_runs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.tenant_id"],
            name=op.f("fk_workspace_file_versions_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workspace_file_versions")),
        sa.UniqueConstraint(
            "file_id", "version", name=op.f("uq_workspace_file_versions_file_id_version")
        ),
    )
    op.create_index(
        op.f("ix_workspace_file_versions_run_id"),
        "workspace_file_versions",
        ["run_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_workspace_file_versions_tenant_id"),
        "workspace_file_versions",
        ["tenant_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_column("conversations", "files_version")
    op.drop_index(
        op.f("ix_workspace_file_versions_tenant_id"), table_name="workspace_file_versions"
    )
    op.drop_index(op.f("ix_workspace_file_versions_run_id"), table_name="workspace_file_versions")
    op.drop_table("workspace_file_versions")
    op.drop_index(op.f("ix_workspace_files_tenant_id"), table_name="workspace_files")
    op.drop_table("workspace_files")

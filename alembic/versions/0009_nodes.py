"""Service nodes (their roles and heartbeat) and the node each run belongs to.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("node_id", sa.String(length=100), nullable=False),
        sa.Column("roles", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "heartbeat_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("running", sa.Integer(), server_default="0", nullable=False),
        sa.Column("warm", sa.Integer(), server_default="0", nullable=False),
        sa.Column("capacity", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_nodes")),
    )
    op.add_column("runs", sa.Column("node_id", sa.String(length=100), nullable=True))
    op.create_index(
        "ix_runs_active_node",
        "runs",
        ["node_id"],
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )


def downgrade() -> None:
    op.drop_index("ix_runs_active_node", "runs")
    op.drop_column("runs", "node_id")
    op.drop_table("nodes")

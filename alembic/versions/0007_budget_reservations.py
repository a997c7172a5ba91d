"""What a queued or running run holds of its budgets; how each usage record was priced.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "runs", sa.Column("reserved_usd", sa.Numeric(precision=18, scale=6), nullable=True)
    )
    op.add_column(
        "usage_records",
        sa.Column("pricing", sa.String(length=16), server_default="exact", nullable=False),
    )
    op.add_column(
        "usage_records",
        sa.Column("counts_run", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.execute(
        "UPDATE usage_records SET counts_run = true WHERE id IN"
        " (SELECT DISTINCT ON (run_id) id FROM usage_records ORDER BY run_id, created_at, id)"
    )


def downgrade() -> None:
    op.drop_column("usage_records", "counts_run")
    op.drop_column("usage_records", "pricing")
    op.drop_column("runs", "reserved_usd")

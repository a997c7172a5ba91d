"""Per-tenant conversation counts, kept by a trigger, so a list's total costs the same
for a tenant with a hundred conversations as for one with a million.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "conversation_counts",
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.tenant_id"],
            name=op.f("fk_conversation_counts_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "status", name=op.f("pk_conversation_counts")),
    )
    # Statement-level triggers over transition tables: one counter write per statement
    # and (tenant, status), so bulk inserts and cascaded deletes stay linear.
    op.execute(
        """
        CREATE FUNCTION count_conversations() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                INSERT INTO conversation_counts AS c (tenant_id, status, count)
                SELECT tenant_id, status, count(*) FROM new_rows GROUP BY tenant_id, status
                ON CONFLICT (tenant_id, status) DO UPDATE SET count = c.count + EXCLUDED.count;
            ELSIF TG_OP = 'DELETE' THEN
                UPDATE conversation_counts AS c SET count = c.count - gone.n
                FROM (SELECT tenant_id, status, count(*) AS n FROM old_rows
                      GROUP BY tenant_id, status) AS gone
                WHERE c.tenant_id = gone.tenant_id AND c.status = gone.status;
            ELSE
                INSERT INTO conversation_counts AS c (tenant_id, status, count)
                SELECT tenant_id, status, sum(delta) FROM (
                    SELECT o.tenant_id, o.status, -1 AS delta
                    FROM old_rows o JOIN new_rows n USING (conversation_id)
                    WHERE (o.tenant_id, o.status) IS DISTINCT FROM (n.tenant_id, n.status)
                    UNION ALL
                    SELECT n.tenant_id, n.status, 1
                    FROM old_rows o JOIN new_rows n USING (conversation_id)
                    WHERE (o.tenant_id, o.status) IS DISTINCT FROM (n.tenant_id, n.status)
                ) AS moves
                GROUP BY tenant_id, status
                ON CONFLICT (tenant_id, status) DO UPDATE SET count = c.count + EXCLUDED.count;
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    for event, tables in (
        ("INSERT", "NEW TABLE AS new_rows"),
        ("DELETE", "OLD TABLE AS old_rows"),
        ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    ):
        op.execute(
            f"CREATE TRIGGER conversations_count_{event.lower()} AFTER {event} ON conversations"
            f" REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION count_conversations()"
        )
    op.execute(
        """
        INSERT INTO conversation_counts (tenant_id, status, count)
        SELECT tenant_id, status, count(*) FROM conversations GROUP BY tenant_id, status
        """
    )


def downgrade() -> None:
    for event in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER conversations_count_{event} ON conversations")
    op.execute("DROP FUNCTION count_conversations()")
    op.drop_table("conversation_counts")

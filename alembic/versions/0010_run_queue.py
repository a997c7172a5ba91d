"""The job queue runs are dispatched through (procrastinate's own tables and functions,
as its installed version defines them), and the job that carries each run.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from procrastinate.schema import SchemaManager

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Many statements in one: asyncpg sends them as a simple query, not a prepared one.
    adapted = op.get_bind().connection.dbapi_connection
    adapted.run_async(lambda raw: raw.execute(SchemaManager.get_schema()))  # type: ignore[union-attr]
    op.add_column("runs", sa.Column("job_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "job_id")
    op.execute(
        """
        DO $$
        DECLARE object record;
        BEGIN
            FOR object IN SELECT tablename FROM pg_tables
                          WHERE schemaname = current_schema() AND tablename LIKE 'procrastinate%'
            LOOP EXECUTE format('DROP TABLE IF EXISTS %I CASCADE', object.tablename); END LOOP;
            FOR object IN SELECT p.oid::regprocedure AS signature FROM pg_proc p
                          JOIN pg_namespace n ON n.oid = p.pronamespace
                          WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate%'
            LOOP EXECUTE format('DROP FUNCTION IF EXISTS %s CASCADE', object.signature); END LOOP;
            FOR object IN SELECT typname FROM pg_type t
                          JOIN pg_namespace n ON n.oid = t.typnamespace
                          WHERE n.nspname = current_schema() AND typname LIKE 'procrastinate%'
                            AND t.typtype IN ('e', 'c')
            LOOP EXECUTE format('DROP TYPE IF EXISTS %I CASCADE', object.typname); END LOOP;
        END
        $$
        """
    )

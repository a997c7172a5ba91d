"""Usage by API key; what each record's cache reads saved, at the prices it was charged;
and usage rolled up by tenant, UTC bucket (an hour, and a quarter hour) and model, kept
by a trigger, so a summary reads one row per bucket and model instead of one per record.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SUMS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
    "cache_read_tokens",
    "cost_usd",
    "cache_saved_usd",
)
# Every IANA zone's offset since 1972 is a whole number of quarter hours: a local hour,
# day, week or month is a whole number of quarter-hour buckets, and of hour buckets in
# the zones whose offsets are whole hours (most).
_WIDTHS = "(VALUES (15), (60)) AS w(width_minutes)"
_BUCKET = (
    "date_bin(make_interval(mins => w.width_minutes), {0}.created_at,"
    " timestamptz '2000-01-01 00:00+00')"
)


def _signed(rows: str, sign: str) -> str:
    """The rollup rows' changes from a transition table: per bucket, signed sums."""
    sums = ", ".join(f"{sign} * sum({c}) AS {c}" for c in _SUMS)
    return (
        f"SELECT tenant_id, w.width_minutes, {_BUCKET.format(rows)} AS bucket_start, model_id,"
        f" {sign} * count(*) AS records, {sign} * count(*) FILTER (WHERE counts_run) AS runs,"
        f" {sums} FROM {rows} CROSS JOIN {_WIDTHS} GROUP BY 1, 2, 3, 4"
    )


def upgrade() -> None:
    for table in ("runs", "usage_records"):
        op.add_column(table, sa.Column("api_key_id", sa.Uuid(), nullable=True))
        op.create_foreign_key(
            op.f(f"fk_{table}_api_key_id_api_keys"),
            table,
            "api_keys",
            ["api_key_id"],
            ["id"],
            ondelete="SET NULL",
        )
    op.add_column(
        "usage_records",
        sa.Column(
            "cache_saved_usd",
            sa.Numeric(precision=18, scale=6),
            server_default=sa.text("0"),
            nullable=False,
        ),
    )
    # Records made before this column: their model's prices now, the best there is.
    op.execute(
        "UPDATE usage_records u SET cache_saved_usd ="
        " round(u.cache_read_tokens * (m.price_input - m.price_cache_read) / 1000000, 6)"
        " FROM models m WHERE m.model_id = u.model_id AND u.cache_read_tokens > 0"
    )
    for column in ("user_id", "api_key_id"):
        op.create_index(
            op.f(f"ix_usage_records_tenant_{column}_created"),
            "usage_records",
            ["tenant_id", column, "created_at"],
        )

    op.create_table(
        "usage_rollups",
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("width_minutes", sa.SmallInteger(), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_id", sa.String(length=100), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.Column("runs", sa.BigInteger(), nullable=False),
        *(sa.Column(c, sa.BigInteger(), nullable=False) for c in _SUMS[:5]),
        *(sa.Column(c, sa.Numeric(precision=24, scale=6), nullable=False) for c in _SUMS[5:]),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.tenant_id"],
            name=op.f("fk_usage_rollups_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id",
            "width_minutes",
            "bucket_start",
            "model_id",
            name=op.f("pk_usage_rollups"),
        ),
    )
    columns = ", ".join(
        ("tenant_id", "width_minutes", "bucket_start", "model_id", "records", "runs", *_SUMS)
    )
    added = ", ".join(f"{c} = r.{c} + EXCLUDED.{c}" for c in ("records", "runs", *_SUMS))
    taken = ", ".join(f"{c} = r.{c} + gone.{c}" for c in ("records", "runs", *_SUMS))
    key = " AND ".join(
        f"r.{c} = gone.{c}" for c in ("tenant_id", "width_minutes", "bucket_start", "model_id")
    )
    # Statement-level triggers over transition tables, as for conversation counts: one
    # rollup write per statement and bucket. Removed records are subtracted (their
    # buckets emptied of records are deleted); a tenant's cascade finds nothing to add.
    op.execute(
        f"""
        CREATE FUNCTION roll_up_usage() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('DELETE', 'UPDATE') THEN
                UPDATE usage_rollups AS r SET {taken}
                FROM ({_signed("old_rows", "-1")}) AS gone
                WHERE {key};
                DELETE FROM usage_rollups AS r USING
                    (SELECT DISTINCT tenant_id, w.width_minutes,
                            {_BUCKET.format("old_rows")} AS bucket_start, model_id
                     FROM old_rows CROSS JOIN {_WIDTHS}) AS gone
                WHERE {key} AND r.records = 0;
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                INSERT INTO usage_rollups AS r ({columns}) {_signed("new_rows", "1")}
                ON CONFLICT (tenant_id, width_minutes, bucket_start, model_id)
                DO UPDATE SET {added};
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
            f"CREATE TRIGGER usage_records_roll_up_{event.lower()} AFTER {event} ON usage_records"
            f" REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION roll_up_usage()"
        )
    op.execute(f"INSERT INTO usage_rollups ({columns}) {_signed('usage_records', '1')}")


def downgrade() -> None:
    for event in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER usage_records_roll_up_{event} ON usage_records")
    op.execute("DROP FUNCTION roll_up_usage()")
    op.drop_table("usage_rollups")
    for column in ("user_id", "api_key_id"):
        op.drop_index(op.f(f"ix_usage_records_tenant_{column}_created"), "usage_records")
    op.drop_column("usage_records", "cache_saved_usd")
    for table in ("runs", "usage_records"):
        op.drop_constraint(op.f(f"fk_{table}_api_key_id_api_keys"), table, type_="foreignkey")
        op.drop_column(table, "api_key_id")

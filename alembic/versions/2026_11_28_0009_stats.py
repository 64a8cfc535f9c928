"""Statistics kept exact by the database: event counts per property, UTC day (and UTC hour),
schema version, event type and effective choices, with GPC/DNT counts

Statement-level triggers with transition tables add every inserted event and subtract every
deleted one in the same transaction, whatever path wrote or erased it, so the counts equal a
COUNT over the stored events at any snapshot (docs/stats.md). Rows are split by a small shard
number (the backend's pid), so concurrent writers do not queue on one row; a reader sums them.
The trigger function runs as the owner: the service's role may only read the table.

The table is filled from the events already stored, under a SHARE lock that holds writes back
for the duration (docs/stats.md, "Upgrading").

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SHARDS = 8

# Adds (sign 1) or subtracts (sign -1) the counts of `rows`, a transition table's name. Events are
# grouped by their effective choices as a whole (a handful of distinct maps), not per category:
# no JSON is taken apart on the write path; a reader sums per category.
COUNT_TEMPLATE = """
    INSERT INTO consent_stats_{table} AS s (
        property, {bucket}, schema_version, event_type, effective, shard, events, gpc, dnt
    )
    SELECT property, {bucket_of_recorded_at}, schema_version, event_type, effective,
           pg_backend_pid() % {shards}, {sign} * count(*),
           {sign} * count(*) FILTER (WHERE gpc), {sign} * count(*) FILTER (WHERE dnt)
    FROM {rows}
    GROUP BY 1, 2, 3, 4, 5
    -- One lock order for every writer: two statements on one shard never deadlock.
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (property, {bucket}, schema_version, event_type, effective, shard) DO UPDATE
    SET events = s.events + excluded.events,
        gpc = s.gpc + excluded.gpc,
        dnt = s.dnt + excluded.dnt;
"""
# Days answer whole days at the cost of a few hundred rows for 90 days; hours answer the parts of
# days at either end of a range.
BUCKETS = {
    "daily": ("day", "(recorded_at AT TIME ZONE 'UTC')::date"),
    "hourly": ("hour", "date_trunc('hour', recorded_at, 'UTC')"),
}


def counting(rows: str, sign: int) -> list[str]:
    """One statement per table."""
    return [
        COUNT_TEMPLATE.format(
            table=table,
            bucket=bucket,
            bucket_of_recorded_at=expression,
            rows=rows,
            sign=sign,
            shards=SHARDS,
        )
        for table, (bucket, expression) in BUCKETS.items()
    ]


TRIGGER_FUNCTION = f"""
CREATE FUNCTION consent_stats_count() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {"".join(counting("added", 1))}
    ELSE
        {"".join(counting("removed", -1))}
    END IF;
    RETURN NULL;
END;
$$
"""

# The events stored before this migration, all in shard 0.
BACKFILL = [
    statement.replace(f"pg_backend_pid() % {SHARDS}", "0")
    for statement in counting("consent_events", 1)
]


def upgrade() -> None:
    for table, (bucket, _) in BUCKETS.items():
        bucket_type: sa.types.TypeEngine[Any] = (
            sa.Date() if bucket == "day" else sa.DateTime(timezone=True)
        )
        op.create_table(
            f"consent_stats_{table}",
            sa.Column("property", sa.Text(), nullable=False),
            sa.Column(bucket, bucket_type, nullable=False),
            sa.Column("schema_version", sa.Integer(), nullable=False),
            sa.Column("event_type", sa.Text(), nullable=False),
            sa.Column("effective", JSONB(), nullable=False),
            sa.Column("shard", sa.SmallInteger(), nullable=False),
            sa.Column("events", sa.BigInteger(), nullable=False),
            sa.Column("gpc", sa.BigInteger(), nullable=False),
            sa.Column("dnt", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint(
                "property", bucket, "schema_version", "event_type", "effective", "shard"
            ),
        )
        op.execute(f"GRANT SELECT ON consent_stats_{table} TO consent_api")
    op.execute(TRIGGER_FUNCTION)
    op.execute("REVOKE ALL ON FUNCTION consent_stats_count() FROM PUBLIC")
    # No event may be written between the backfill and the triggers: writes wait meanwhile.
    op.execute("LOCK TABLE consent_events IN SHARE MODE")
    for statement in BACKFILL:
        op.execute(statement)
    op.execute("ANALYZE consent_stats_daily, consent_stats_hourly")  # plans for the first reads
    op.execute(
        """
        CREATE TRIGGER consent_events_count_added
        AFTER INSERT ON consent_events REFERENCING NEW TABLE AS added
        FOR EACH STATEMENT EXECUTE FUNCTION consent_stats_count()
        """
    )
    op.execute(
        """
        CREATE TRIGGER consent_events_count_removed
        AFTER DELETE ON consent_events REFERENCING OLD TABLE AS removed
        FOR EACH STATEMENT EXECUTE FUNCTION consent_stats_count()
        """
    )
    # The parts of hours at either end of a range are counted from the events of those hours.
    op.execute(
        "CREATE INDEX ix_consent_events_recorded_at ON consent_events"
        " USING brin (recorded_at) WITH (autosummarize = on)"
    )


def downgrade() -> None:
    op.drop_index("ix_consent_events_recorded_at", table_name="consent_events")
    op.execute("DROP TRIGGER consent_events_count_removed ON consent_events")
    op.execute("DROP TRIGGER consent_events_count_added ON consent_events")
    for table in BUCKETS:
        op.drop_table(f"consent_stats_{table}")
    op.execute("DROP FUNCTION consent_stats_count()")

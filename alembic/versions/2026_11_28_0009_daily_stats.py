"""Daily statistics kept exact by the database: event counts per property, UTC day, schema version
and event type, with GPC/DNT counts and, per category, how many events granted or denied it

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

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SHARDS = 8

# The sum of two {category: count} maps.
ADD_FUNCTION = """
CREATE FUNCTION consent_counts_add(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog
AS $$
    SELECT coalesce(
        jsonb_object_agg(k, coalesce((a->>k)::bigint, 0) + coalesce((b->>k)::bigint, 0)),
        '{}'::jsonb
    )
    FROM (SELECT jsonb_object_keys(a) UNION SELECT jsonb_object_keys(b)) AS keys(k)
$$
"""

# Adds (sign 1) or subtracts (sign -1) the counts of `rows`, a transition table's name.
COUNT_TEMPLATE = """
    WITH per_category AS (
        SELECT r.property, (r.recorded_at AT TIME ZONE 'UTC')::date AS day, r.schema_version,
               r.event_type, e.key,
               count(*) FILTER (WHERE e.value = 'true'::jsonb) AS granted,
               count(*) FILTER (WHERE e.value = 'false'::jsonb) AS denied
        FROM {rows} r CROSS JOIN LATERAL jsonb_each(r.effective) e
        WHERE r.event_type <> 're-prompt'
        GROUP BY 1, 2, 3, 4, 5
    ), per_group AS (
        SELECT property, (recorded_at AT TIME ZONE 'UTC')::date AS day, schema_version,
               event_type, count(*) AS events, count(*) FILTER (WHERE gpc) AS gpc,
               count(*) FILTER (WHERE dnt) AS dnt
        FROM {rows}
        GROUP BY 1, 2, 3, 4
    )
    INSERT INTO consent_stats_daily AS s (
        property, day, schema_version, event_type, shard, events, gpc, dnt, granted, denied
    )
    SELECT g.property, g.day, g.schema_version, g.event_type, pg_backend_pid() % {shards},
           {sign} * g.events, {sign} * g.gpc, {sign} * g.dnt,
           coalesce((SELECT jsonb_object_agg(c.key, {sign} * c.granted) FROM per_category c
                     WHERE (c.property, c.day, c.schema_version, c.event_type)
                         = (g.property, g.day, g.schema_version, g.event_type)), '{{}}'),
           coalesce((SELECT jsonb_object_agg(c.key, {sign} * c.denied) FROM per_category c
                     WHERE (c.property, c.day, c.schema_version, c.event_type)
                         = (g.property, g.day, g.schema_version, g.event_type)), '{{}}')
    FROM per_group g
    -- One lock order for every writer: two statements on one shard never deadlock.
    ORDER BY g.property, g.day, g.schema_version, g.event_type
    ON CONFLICT (property, day, schema_version, event_type, shard) DO UPDATE
    SET events = s.events + excluded.events,
        gpc = s.gpc + excluded.gpc,
        dnt = s.dnt + excluded.dnt,
        granted = consent_counts_add(s.granted, excluded.granted),
        denied = consent_counts_add(s.denied, excluded.denied);
"""

TRIGGER_FUNCTION = f"""
CREATE FUNCTION consent_stats_count() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {COUNT_TEMPLATE.format(rows="added", sign=1, shards=SHARDS)}
    ELSE
        {COUNT_TEMPLATE.format(rows="removed", sign=-1, shards=SHARDS)}
    END IF;
    RETURN NULL;
END;
$$
"""

# The events stored before this migration, all in shard 0.
BACKFILL = COUNT_TEMPLATE.format(rows="consent_events", sign=1, shards=SHARDS).replace(
    f"pg_backend_pid() % {SHARDS}", "0"
)


def upgrade() -> None:
    op.create_table(
        "consent_stats_daily",
        sa.Column("property", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("gpc", sa.BigInteger(), nullable=False),
        sa.Column("dnt", sa.BigInteger(), nullable=False),
        sa.Column("granted", JSONB(), nullable=False),
        sa.Column("denied", JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("property", "day", "schema_version", "event_type", "shard"),
    )
    op.execute(ADD_FUNCTION)
    op.execute(TRIGGER_FUNCTION)
    op.execute("REVOKE ALL ON FUNCTION consent_stats_count() FROM PUBLIC")
    # No event may be written between the backfill and the triggers: writes wait meanwhile.
    op.execute("LOCK TABLE consent_events IN SHARE MODE")
    op.execute(BACKFILL)
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
    op.execute("GRANT SELECT ON consent_stats_daily TO consent_api")
    # The parts of days at either end of a range are counted from the events of those days.
    op.execute(
        "CREATE INDEX ix_consent_events_recorded_at ON consent_events"
        " USING brin (recorded_at) WITH (autosummarize = on)"
    )


def downgrade() -> None:
    op.drop_index("ix_consent_events_recorded_at", table_name="consent_events")
    op.execute("DROP TRIGGER consent_events_count_removed ON consent_events")
    op.execute("DROP TRIGGER consent_events_count_added ON consent_events")
    op.drop_table("consent_stats_daily")
    op.execute("DROP FUNCTION consent_stats_count()")
    op.execute("DROP FUNCTION consent_counts_add(jsonb, jsonb)")

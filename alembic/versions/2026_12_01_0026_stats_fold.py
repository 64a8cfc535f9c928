"""An erasure leaves no row of its own in the statistics

The delete trigger subtracts an erased event's counts in a shard of its own (`pg_backend_pid() %
8`, migration 0009: concurrent erasures then do not wait on each other's rows). Nothing merged
those rows back, so a dump showed, beside the audit trail's erasure, a row of `-1` with the
erased decision's hour, type, effective choices and signals (a review of 2026-12-01).

`consent_stats_rollup` now first folds every row outside shard 0 into shard 0's row of the same
counts, and drops the rows that fold to zero: the tables then hold what a count without the erased
events would hold, and nothing about them. It does so holding the rollup's row `FOR UPDATE`, which
an erasure's trigger holds `FOR SHARE` until it commits: no fold meets an erasure in progress. A
partial index on each table finds the rows to fold without reading the others. Counts, and every
reader (which sums over shards), are unchanged.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUCKETS = {
    "daily": ("day", "(recorded_at AT TIME ZONE 'UTC')::date"),
    "hourly": ("hour", "date_trunc('hour', recorded_at, 'UTC')"),
}
KEY = "property, {bucket}, schema_version, event_type, effective"

# Migration 0010's counting of the events a rollup adds, unchanged to the character (a downgrade
# restores its function exactly).
ADD = """
    INSERT INTO consent_stats_{table} AS s (
        property, {bucket}, schema_version, event_type, effective, shard, events, gpc, dnt
    )
    SELECT property, {expression}, schema_version, event_type, effective,
           0, 1 * count(*),
           1 * count(*) FILTER (WHERE gpc), 1 * count(*) FILTER (WHERE dnt)
    FROM (SELECT * FROM consent_events WHERE seq > from_seq AND seq <= to_seq) AS counted
    GROUP BY 1, 2, 3, 4, 5
    -- One lock order for every writer: two statements on one shard never deadlock.
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (property, {bucket}, schema_version, event_type, effective, shard) DO UPDATE
    SET events = s.events + excluded.events,
        gpc = s.gpc + excluded.gpc,
        dnt = s.dnt + excluded.dnt;
"""
FOLD = f"""
    WITH moved AS (
        DELETE FROM consent_stats_{{table}} WHERE shard <> 0
        RETURNING {KEY}, events, gpc, dnt
    )
    INSERT INTO consent_stats_{{table}} AS s (
        property, {{bucket}}, schema_version, event_type, effective, shard, events, gpc, dnt
    )
    SELECT {KEY}, 0, sum(events), sum(gpc), sum(dnt)
    FROM moved
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (property, {{bucket}}, schema_version, event_type, effective, shard) DO UPDATE
    SET events = s.events + excluded.events,
        gpc = s.gpc + excluded.gpc,
        dnt = s.dnt + excluded.dnt;
    DELETE FROM consent_stats_{{table}} WHERE events = 0 AND gpc = 0 AND dnt = 0;
"""  # noqa: S608 (this file's constants)


def rollup(fold: bool) -> str:
    folding = "".join(
        FOLD.format(table=table, bucket=bucket) for table, (bucket, _) in BUCKETS.items()
    )
    adding = "".join(
        ADD.format(table=table, bucket=bucket, expression=expression)
        for table, (bucket, expression) in BUCKETS.items()
    )
    return f"""
CREATE OR REPLACE FUNCTION consent_stats_rollup(max_rows bigint) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    from_seq bigint;
    to_seq bigint;
BEGIN
    -- Each statement must see what committed before it (a delete waiting on this row subtracts
    -- what this rollup adds, docs/stats.md): not so under REPEATABLE READ or SERIALIZABLE.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'consent_stats_rollup runs in a READ COMMITTED transaction';
    END IF;
    SELECT rolled INTO from_seq FROM consent_stats_rollup FOR UPDATE;{folding if fold else ""}
    SELECT CASE WHEN sealed - from_seq <= max_rows THEN sealed
                ELSE from_seq + GREATEST(max_rows, 1) END
    INTO to_seq
    FROM consent_stats_seal;
    IF to_seq <= from_seq THEN
        RETURN 0;
    END IF;
    {adding}
    UPDATE consent_stats_rollup SET rolled = to_seq, rolled_at = now();
    RETURN to_seq - from_seq;
END;
$$
"""  # noqa: S608 (this file's constants)


def upgrade() -> None:
    for table in BUCKETS:
        op.execute(
            f"CREATE INDEX consent_stats_{table}_to_fold ON consent_stats_{table} (shard)"
            " WHERE shard <> 0"
        )
        op.execute(
            f"CREATE INDEX consent_stats_{table}_empty ON consent_stats_{table} (shard)"
            " WHERE events = 0 AND gpc = 0 AND dnt = 0"
        )
    op.execute(rollup(fold=True))


def downgrade() -> None:
    op.execute(rollup(fold=False))
    for table in BUCKETS:
        op.execute(f"DROP INDEX consent_stats_{table}_empty")
        op.execute(f"DROP INDEX consent_stats_{table}_to_fold")

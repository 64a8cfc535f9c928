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

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = {"daily": "day", "hourly": "hour"}
KEY = "property, {bucket}, schema_version, event_type, effective"
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
    DELETE FROM consent_stats_{{table}} WHERE events = 0 AND gpc = 0 AND dnt = 0;"""  # noqa: S608
LOCKED = "    SELECT rolled INTO from_seq FROM consent_stats_rollup FOR UPDATE;"


def _migration_0010_rollup() -> str:
    """Migration 0010's `consent_stats_rollup`, as it made it (a downgrade restores it exactly)."""
    path = Path(__file__).with_name("2026_11_29_0010_stats_rollup.py")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.ROLLUP).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def rollup(fold: bool) -> str:
    """0010's function; with `fold`, first the folding of each table, under the row's lock."""
    function = _migration_0010_rollup()
    assert function.count(LOCKED) == 1
    if not fold:
        return function
    folding = "".join(FOLD.format(table=table, bucket=bucket) for table, bucket in TABLES.items())
    return function.replace(LOCKED, LOCKED + folding)


def upgrade() -> None:
    for table in TABLES:
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
    for table in TABLES:
        op.execute(f"DROP INDEX consent_stats_{table}_empty")
        op.execute(f"DROP INDEX consent_stats_{table}_to_fold")

"""Statistics off the write path: events are added to the statistics by a rollup, not a trigger

Migration 0009 counted every inserted batch in a statement trigger, in the writer's transaction:
about 20 µs of PostgreSQL CPU per event on the ingest path. Now an insert costs nothing extra.
The row of `consent_stats_rollup` says which events the tables hold: those with `seq <= rolled`.
A reader adds the events above it (the tail: seconds of events) from the table itself, in the same
snapshot, so the counts stay exact (docs/stats.md, "Rollup").

- `consent_stats_seal()` finds a `seq` below which no event can still appear: under a brief SHARE
  lock on `consent_events` (it waits for the inserts in flight and gives up after 50 ms, or at
  once while maintenance holds the table), the largest `seq` stored. Every event with a lower
  `seq` has committed or never will. It is kept in a row of its own (`consent_stats_seal`): a seal
  holding its lock never waits on a rollup's row.
- `consent_stats_rollup(max_rows)` adds the events in (rolled, sealed] to the tables and moves
  `rolled`, holding the row's lock (FOR UPDATE): at most one rollup at a time.
- The delete trigger subtracts only deleted events at or below `rolled`, reading it FOR SHARE: a
  rollup and an erasure cannot interleave so that an event is counted twice or subtracted twice.

The service's role may call the two functions and read the row; it may no longer choose `seq` on
insert (OVERRIDING SYSTEM VALUE could otherwise slip an event in below `rolled`).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SHARDS = 8

# Adds (sign 1) or subtracts (sign -1) the counts of `rows` (a relation or a subquery).
COUNT_TEMPLATE = """
    INSERT INTO consent_stats_{table} AS s (
        property, {bucket}, schema_version, event_type, effective, shard, events, gpc, dnt
    )
    SELECT property, {bucket_of_recorded_at}, schema_version, event_type, effective,
           {shard}, {sign} * count(*),
           {sign} * count(*) FILTER (WHERE gpc), {sign} * count(*) FILTER (WHERE dnt)
    FROM {rows} AS counted
    GROUP BY 1, 2, 3, 4, 5
    -- One lock order for every writer: two statements on one shard never deadlock.
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (property, {bucket}, schema_version, event_type, effective, shard) DO UPDATE
    SET events = s.events + excluded.events,
        gpc = s.gpc + excluded.gpc,
        dnt = s.dnt + excluded.dnt;
"""
BUCKETS = {
    "daily": ("day", "(recorded_at AT TIME ZONE 'UTC')::date"),
    "hourly": ("hour", "date_trunc('hour', recorded_at, 'UTC')"),
}


def counting(rows: str, sign: int, shard: str) -> str:
    return "".join(
        COUNT_TEMPLATE.format(
            table=table,
            bucket=bucket,
            bucket_of_recorded_at=expression,
            rows=rows,
            sign=sign,
            shard=shard,
        )
        for table, (bucket, expression) in BUCKETS.items()
    )


SUBTRACTING = counting(
    "(SELECT * FROM removed WHERE seq <= counted_to)", -1, f"pg_backend_pid() % {SHARDS}"
)
ADDING = counting("(SELECT * FROM consent_events WHERE seq > from_seq AND seq <= to_seq)", 1, "0")

# (The f-strings below only join this file's constants.)
SUBTRACT = f"""
CREATE OR REPLACE FUNCTION consent_stats_count() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    counted_to bigint;
BEGIN
    -- FOR SHARE waits for a rollup in progress, then reads what it committed.
    SELECT rolled INTO counted_to FROM consent_stats_rollup FOR SHARE;
    {SUBTRACTING}
    RETURN NULL;
END;
$$
"""  # noqa: S608

SEAL = """
CREATE FUNCTION consent_stats_seal() RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
-- Waiting longer would hold back every insert queued behind this lock request.
SET lock_timeout = '50ms'
AS $$
DECLARE
    sealed_to bigint;
BEGIN
    -- A VACUUM, ANALYZE or index build holds a lock that SHARE waits for, maybe for minutes:
    -- not worth queueing (and holding back inserts) for 50 ms only to give up.
    IF EXISTS (
        SELECT FROM pg_locks
        WHERE locktype = 'relation' AND granted
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND relation = 'consent_events'::regclass
          AND mode IN ('ShareUpdateExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock',
                       'AccessExclusiveLock')
    ) THEN
        RETURN NULL;
    END IF;
    -- Granted once no insert is in flight: every seq handed out so far is committed or gone.
    LOCK TABLE consent_events IN SHARE MODE;
    UPDATE consent_stats_seal
    SET sealed = GREATEST(sealed, (SELECT coalesce(max(seq), 0) FROM consent_events)),
        sealed_at = now()
    RETURNING sealed INTO sealed_to;
    RETURN sealed_to;
END;
$$
"""

ROLLUP = f"""
CREATE FUNCTION consent_stats_rollup(max_rows bigint) RETURNS bigint
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
    SELECT rolled INTO from_seq FROM consent_stats_rollup FOR UPDATE;
    SELECT CASE WHEN sealed - from_seq <= max_rows THEN sealed
                ELSE from_seq + GREATEST(max_rows, 1) END
    INTO to_seq
    FROM consent_stats_seal;
    IF to_seq <= from_seq THEN
        RETURN 0;
    END IF;
    {ADDING}
    UPDATE consent_stats_rollup SET rolled = to_seq, rolled_at = now();
    RETURN to_seq - from_seq;
END;
$$
"""  # noqa: S608

# The service's role inserts every column but `seq`.
INSERTABLE = (
    "event_id, property, subject_id, event_type, schema_version, choices, effective, gpc, dnt,"
    " signals_applied, source, entered_by, ip_hash, user_hash, hash_key_id, user_agent, page_url,"
    " tcf_string, gpp_string, request_hash, recorded_at, anonymised_at"
)


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE consent_stats_seal (
            one boolean PRIMARY KEY DEFAULT true CHECK (one),
            sealed bigint NOT NULL,
            sealed_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE consent_stats_rollup (
            one boolean PRIMARY KEY DEFAULT true CHECK (one),
            rolled bigint NOT NULL,
            rolled_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # Until the trigger is gone every insert is counted; with writes held back, the tables hold
    # exactly the events stored.
    op.execute("LOCK TABLE consent_events IN SHARE MODE")
    op.execute("DROP TRIGGER consent_events_count_added ON consent_events")
    for table, column in (("seal", "sealed"), ("rollup", "rolled")):
        op.execute(
            f"INSERT INTO consent_stats_{table} ({column})"  # noqa: S608 (constants)
            " SELECT coalesce(max(seq), 0) FROM consent_events"
        )
    op.execute(SUBTRACT)
    op.execute(SEAL)
    op.execute(ROLLUP)
    op.execute("GRANT SELECT ON consent_stats_seal, consent_stats_rollup TO consent_api")
    for function in ("consent_stats_seal()", "consent_stats_rollup(bigint)"):
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {function} TO consent_api")
    op.execute("REVOKE INSERT ON consent_events FROM consent_api")
    op.execute(f"GRANT INSERT ({INSERTABLE}) ON consent_events TO consent_api")


def downgrade() -> None:
    op.execute(f"REVOKE INSERT ({INSERTABLE}) ON consent_events FROM consent_api")
    op.execute("GRANT INSERT ON consent_events TO consent_api")
    # With writes held back: what the rollup has not added yet, then the trigger of 0009 back.
    op.execute("LOCK TABLE consent_events IN SHARE MODE")
    op.execute(
        "UPDATE consent_stats_seal"
        " SET sealed = GREATEST(sealed, (SELECT coalesce(max(seq), 0) FROM consent_events))"
    )
    op.execute(
        "SELECT consent_stats_rollup(sealed - rolled) FROM consent_stats_seal, consent_stats_rollup"
    )
    op.execute("DROP FUNCTION consent_stats_rollup(bigint)")
    op.execute("DROP FUNCTION consent_stats_seal()")
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION consent_stats_count() RETURNS trigger
        LANGUAGE plpgsql
        SECURITY DEFINER
        SET search_path = pg_catalog, public
        AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                {counting("added", 1, f"pg_backend_pid() % {SHARDS}")}
            ELSE
                {counting("removed", -1, f"pg_backend_pid() % {SHARDS}")}
            END IF;
            RETURN NULL;
        END;
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER consent_events_count_added
        AFTER INSERT ON consent_events REFERENCING NEW TABLE AS added
        FOR EACH STATEMENT EXECUTE FUNCTION consent_stats_count()
        """
    )
    op.execute("DROP TABLE consent_stats_rollup")
    op.execute("DROP TABLE consent_stats_seal")

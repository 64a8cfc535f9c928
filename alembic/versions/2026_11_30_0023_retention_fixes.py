"""Retention and partitions: the policy in force, UTC months, drops that do not stall ingest

- `consent_retention_due` takes each property's policy from the version in force when the purge
  runs: a pending version whose `effective_at` has passed counts as current, as every reader
  already treats it (`PropertyState.at`), though the stored `current_version` moves only on the
  property's next publish or cancel. In force *now*, also with `--as-of`: a later date's dry run
  does not apply a version not yet in force (it may still be cancelled). Its days are UTC days
  (`SET TimeZone`), whatever the server's zone.
- `consent_retention_purge` reads a month's end from the partition's own bound, a UTC instant:
  with the session's TimeZone east of UTC it took a month as over up to twice the offset early
  and dropped the running month's partition. It deletes what is due elsewhere first and drops
  whole months last, in one sub-transaction under `lock_timeout = 2s` (a DROP locks
  `consent_events` ACCESS EXCLUSIVE until commit, and inserts queue behind it while it waits for
  readers: a DSR export, `pg_dump`). If the lock is not had in 2 s, those months' rows are deleted
  row by row like the rest (`partitions_dropped` then says 0). The row deletes are
  `consent_retention_delete`'s, the owner's.
- `consent_events_add_months` makes each month in its own sub-transaction: a month a row of the
  default partition belongs to cannot be made (check_violation) until the operator moved it
  (docs/retention.md, "Partitions"), and no longer undoes the other months. It says so as a
  WARNING. `consent_events_months_ahead` adds `missing`: this window's months that do not exist.
- `consent_events_outside()` (SECURITY DEFINER, the service's role may call it): the default
  partition's row count, for the gauge between and after failed `months_ahead` calls.

The downgrade puts 0014's definitions back (read from that migration) and drops the new functions.

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-30
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PURGE_LOCK = 0x636F6E73656E7402  # migration 0013's
# A partition's bounds as pg_get_expr writes them: FROM ('…') TO ('…'); NULL for the default.
BOUNDS = "'FROM \\(''([^'']+)''\\) TO \\(''([^'']+)''\\)'"

# The due function's edits (0014's text otherwise).
DUE_EDITS = (
    (
        "LANGUAGE sql STABLE\nSET search_path = pg_catalog, public\n",
        "LANGUAGE sql STABLE\nSET search_path = pg_catalog, public\nSET TimeZone = 'UTC'\n",
    ),
    (
        "    JOIN consent_properties p ON p.name = v.property AND p.current_version = v.version\n",
        "    JOIN consent_properties p ON p.name = v.property\n"
        "    -- The version in force now: a pending one whose time has come (PropertyState.at).\n"
        "    LEFT JOIN consent_schema_versions pv\n"
        "           ON pv.property = p.name AND pv.version = p.pending_version\n"
        "    WHERE v.version = CASE WHEN coalesce(pv.effective_at, pv.published_at) <= now()\n"
        "                           THEN p.pending_version ELSE p.current_version END\n",
    ),
)

# Deletes, through the erasure path, the targets in the partitions `p_months` names, a partition
# at a time: a delete naming the month's bounds reads that month only.
DELETE_FUNCTION = f"""
CREATE FUNCTION consent_retention_delete(p_targets bigint[], p_parts oid[], p_months oid[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    part record;
    stored bigint;
    touched bigint := 0;
BEGIN
    FOR part IN
        SELECT t.part, array_agg(t.seq) AS seqs,
               regexp_match(pg_get_expr(c.relpartbound, c.oid), {BOUNDS}) AS bounds
        FROM unnest(p_targets, p_parts) AS t(seq, part)
        JOIN pg_class c ON c.oid = t.part
        WHERE t.part = ANY (p_months)
        GROUP BY t.part, c.oid
    LOOP
        IF part.bounds IS NULL THEN  -- the default partition
            touched := touched + consent_erase_rows('delete', part.seqs);
            CONTINUE;
        END IF;
        PERFORM set_config('consent.erasure', 'on', true);
        EXECUTE 'DELETE FROM consent_events WHERE recorded_at >= $1 AND recorded_at < $2'
                ' AND seq = ANY ($3)'
        USING part.bounds[1]::timestamptz, part.bounds[2]::timestamptz, part.seqs;
        GET DIAGNOSTICS stored = ROW_COUNT;
        PERFORM set_config('consent.erasure', 'off', true);
        touched := touched + stored;
    END LOOP;
    RETURN touched;
END;
$$
"""  # noqa: S608 (this file's constants)

PURGE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION consent_retention_purge(
    p_as_of timestamptz, p_audit_id uuid, p_actor text, p_dry_run boolean
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    targets bigint[];
    parts oid[];
    counts jsonb;
    whole oid[] := '{{}}';
    part record;
    month oid;
    stored bigint;
    touched bigint := 0;
    dropped integer := 0;
    waits text := current_setting('lock_timeout');
BEGIN
    PERFORM pg_advisory_xact_lock({PURGE_LOCK});
    -- The rules run once: the targets and their counts come from the same result.
    WITH due AS MATERIALIZED (SELECT * FROM consent_retention_due(p_as_of)),
    per_rule AS (SELECT due.property, due.rule, count(*) AS n FROM due GROUP BY 1, 2),
    per_property AS (
        SELECT per_rule.property, jsonb_object_agg(per_rule.rule, per_rule.n) AS rules
        FROM per_rule GROUP BY 1
    )
    SELECT (SELECT coalesce(array_agg(due.seq), '{{}}') FROM due),
           (SELECT coalesce(array_agg(due.part), '{{}}') FROM due),
           (SELECT coalesce(jsonb_object_agg(per_property.property, per_property.rules), '{{}}')
            FROM per_property)
    INTO targets, parts, counts;
    -- Whole months: ended (no insert can still land there: the partition's upper bound, an
    -- instant, whatever the session's TimeZone), and every event in them due.
    FOR part IN
        SELECT t.part, count(*) AS due
        FROM unnest(parts) AS t(part)
        JOIN pg_class c ON c.oid = t.part
        WHERE c.relname ~ '^consent_events_[0-9]{{4}}_[0-9]{{2}}$'
          AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), {BOUNDS}))[2]::timestamptz
              <= now()
        GROUP BY t.part
    LOOP
        EXECUTE format('SELECT count(*) FROM %s', part.part::regclass) INTO stored;
        CONTINUE WHEN stored <> part.due;
        whole := whole || part.part;
    END LOOP;
    IF NOT p_dry_run THEN
        PERFORM set_config('consent.erasure_id', p_audit_id::text, true);
        PERFORM set_config('consent.retention', 'on', true);
        -- What is due elsewhere first: row deletes do not stop inserts.
        touched := consent_retention_delete(
            targets, parts,
            ARRAY(SELECT DISTINCT p FROM unnest(parts) AS p WHERE p <> ALL (whole)));
        -- Whole months last: a DROP locks consent_events ACCESS EXCLUSIVE until the commit, and
        -- inserts queue behind it while it waits for readers. It waits 2 s at most; then those
        -- months are deleted row by row instead (docs/retention.md, "The purge").
        IF cardinality(whole) > 0 THEN
            BEGIN
                PERFORM set_config('lock_timeout', '2s', true);
                PERFORM set_config('consent.erasure', 'on', true);
                -- Their leaves to tombstones and their ids out, as a delete would have left.
                FOREACH month IN ARRAY whole LOOP
                    EXECUTE format('INSERT INTO ledger_tombstones (seq, leaf, erasure)'
                                   ' SELECT seq, leaf, $1 FROM %s WHERE leaf IS NOT NULL',
                                   month::regclass) USING p_audit_id;
                    EXECUTE format('DELETE FROM consent_event_ids i USING %s e'
                                   ' WHERE i.event_id = e.event_id', month::regclass);
                END LOOP;
                FOREACH month IN ARRAY whole LOOP
                    EXECUTE format('DROP TABLE %s', month::regclass);
                END LOOP;
                PERFORM set_config('consent.erasure', 'off', true);
                PERFORM set_config('lock_timeout', waits, true);
                dropped := cardinality(whole);
                touched := touched
                    + (SELECT count(*) FROM unnest(parts) AS t(part) WHERE t.part = ANY (whole));
            EXCEPTION WHEN lock_not_available THEN
                touched := touched + consent_retention_delete(targets, parts, whole);
            END;
        END IF;
        PERFORM set_config('consent.retention', 'off', true);
    END IF;
    INSERT INTO dsr_audit (
        id, action, actor, identifier_type, identifier_hash, hash_key_id, property, since, until,
        mode, reference, matched, deleted, anonymised, request_id
    ) VALUES (
        p_audit_id, 'retention-purge', p_actor, NULL, NULL, '', NULL, NULL, p_as_of,
        CASE WHEN p_dry_run THEN NULL ELSE 'delete' END,
        CASE WHEN p_dry_run THEN 'dry run' ELSE NULL END,
        cardinality(targets), touched, 0, NULL
    );
    RETURN jsonb_build_object(
        'audit_id', p_audit_id, 'as_of', p_as_of, 'dry_run', p_dry_run,
        'due', cardinality(targets), 'deleted', touched, 'by_property', counts,
        'partitions_dropped', dropped, 'whole_partitions', cardinality(whole)
    );
END;
$$
"""  # noqa: S608 (this file's constants)

# 0014's, each month in its own sub-transaction.
ADD_MONTHS = """
CREATE OR REPLACE FUNCTION consent_events_add_months(p_from timestamptz, p_to timestamptz)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public
-- Creating a partition waits for the inserts in flight; inserts queue behind it meanwhile.
SET lock_timeout = '2s'
AS $$
DECLARE
    month timestamp;
    name text;
    made integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(MONTHS_LOCK);
    FOR month IN
        SELECT generate_series(date_trunc('month', p_from AT TIME ZONE 'UTC'),
                               date_trunc('month', p_to AT TIME ZONE 'UTC'), interval '1 month')
    LOOP
        name := 'consent_events_' || to_char(month, 'YYYY_MM');
        CONTINUE WHEN to_regclass(name) IS NOT NULL;
        BEGIN
            EXECUTE format(
                'CREATE TABLE public.%I PARTITION OF public.consent_events'
                ' FOR VALUES FROM (%L) TO (%L)',
                name, month AT TIME ZONE 'UTC', (month + interval '1 month') AT TIME ZONE 'UTC');
            made := made + 1;
        EXCEPTION WHEN check_violation THEN
            -- The default partition holds a row of this month: it is made once the operator
            -- moved that row (docs/retention.md, "Partitions"); the other months are made.
            RAISE WARNING '% not made: %', name, SQLERRM;
        END;
    END LOOP;
    RETURN made;
END;
$$
""".replace("MONTHS_LOCK", str(0x636F6E73656E7403))  # migration 0014's

MONTHS_AHEAD = """
CREATE OR REPLACE FUNCTION consent_events_months_ahead() RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    made integer := consent_events_add_months(now(), now() + interval '3 months');
BEGIN
    RETURN jsonb_build_object(
        'made', made, 'outside', (SELECT count(*) FROM consent_events_default),
        'missing', (
            SELECT coalesce(jsonb_agg(m.name ORDER BY m.name), '[]')
            FROM (SELECT 'consent_events_' || to_char(month, 'YYYY_MM') AS name
                  FROM generate_series(date_trunc('month', now() AT TIME ZONE 'UTC'),
                                       date_trunc('month', (now() + interval '3 months')
                                                           AT TIME ZONE 'UTC'),
                                       interval '1 month') AS month) AS m
            WHERE to_regclass(m.name) IS NULL));
END;
$$
"""

# The gauge's count, for the service's role (which may not read the partition itself).
OUTSIDE = """
CREATE FUNCTION consent_events_outside() RETURNS bigint
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$ SELECT count(*) FROM consent_events_default $$
"""


def _migration_0014() -> ModuleType:
    path = Path(__file__).with_name("2026_11_29_0014_partitions.py")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _or_replace(definition: str) -> str:
    return definition.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def _due_function(partitions: ModuleType) -> str:
    due = _or_replace(partitions._due_function(edited=True))
    for old, new in DUE_EDITS:
        assert due.count(old) == 1, old
        due = due.replace(old, new)
    return due


def upgrade() -> None:
    op.execute(_due_function(_migration_0014()))
    op.execute(DELETE_FUNCTION)
    op.execute(
        "REVOKE ALL ON FUNCTION consent_retention_delete(bigint[], oid[], oid[]) FROM PUBLIC"
    )
    op.execute(PURGE_FUNCTION)
    op.execute(ADD_MONTHS)
    op.execute(MONTHS_AHEAD)
    op.execute(OUTSIDE)
    op.execute("REVOKE ALL ON FUNCTION consent_events_outside() FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION consent_events_outside() TO consent_api")


def downgrade() -> None:
    partitions = _migration_0014()
    op.execute("DROP FUNCTION consent_events_outside()")
    op.execute(_or_replace(str(partitions.MONTHS_AHEAD)))
    op.execute(_or_replace(str(partitions.ADD_MONTHS)))
    op.execute(str(partitions.PURGE_FUNCTION))
    op.execute("DROP FUNCTION consent_retention_delete(bigint[], oid[], oid[])")
    op.execute(_or_replace(partitions._due_function(edited=True)))

"""Retention: the events past their property's retention, and a purge that deletes them, audited

- `consent_retention_due(p_as_of)`: every event past retention as of that time, with the rule that
  makes it so (docs/retention.md). Per subject and property, a decision and the re-prompts after
  it form a group. A group is due `superseded_days` after the next decision replaced it; the
  subject's last group `current_days` after its decision was recorded. Re-prompts before any
  decision form a group that the first decision replaces. A group is only due if every earlier
  group of that subject and property is due too: a withdrawal never goes before the consent it
  withdrew. An anonymised event has no subject: it is due `current_days` after it was recorded.
  The policy is the property's current schema version's `retention`, with its defaults.
- `consent_retention_purge(p_as_of, p_audit_id, p_actor, p_dry_run)`: one at a time (advisory
  lock), deletes what is due through the erasure path (tombstones name the purge's audit row),
  and writes one `dsr_audit` row, `retention-purge`, with the counts (`until` = the as-of time).
  The table owner's alone: the service's role may not call it (an as-of date in the future would
  purge early).
- `consent_retention_purge_due(p_audit_id)`: what the service's role may call (`serve`, every
  CONSENT_RETENTION_PURGE_HOURS): a purge as of now, or NULL at once if another purge runs.
- A purge leaves the statistics as they are (aggregates hold nobody's data): the delete trigger
  subtracts only for an erasure.
- `dsr_audit.identifier_type` and `identifier_hash` may be NULL: a purge names no one.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIMITATION_DAYS = 3 * 365  # consent_schema/document.py: LIMITATION_DAYS

DUE_FUNCTION = f"""
CREATE FUNCTION consent_retention_due(p_as_of timestamptz)
RETURNS TABLE (seq bigint, property text, rule text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, public
AS $$
WITH policy AS (
    SELECT v.property,
           make_interval(days => coalesce((v.content->'retention'->>'superseded_days')::int,
                                          {LIMITATION_DAYS})) AS superseded,
           make_interval(days => coalesce((v.content->'retention'->>'current_days')::int,
                                          (v.content->>'consent_ttl_days')::int
                + coalesce((v.content->'retention'->>'superseded_days')::int, {LIMITATION_DAYS})
           )) AS current
    FROM consent_schema_versions v
    JOIN consent_properties p ON p.name = v.property AND p.current_version = v.version
),
grouped AS (
    SELECT e.seq, e.subject_id, e.property, e.event_type, e.recorded_at,
           count(*) FILTER (WHERE e.event_type <> 're-prompt')
               OVER (PARTITION BY e.subject_id, e.property ORDER BY e.seq) AS grp
    FROM consent_events e
    WHERE e.subject_id IS NOT NULL
),
groups AS (
    SELECT subject_id, property, grp,
           min(recorded_at) FILTER (WHERE event_type <> 're-prompt') AS decided_at,
           min(recorded_at) AS first_at
    FROM grouped
    GROUP BY subject_id, property, grp
),
timed AS (
    SELECT g.subject_id, g.property, g.grp,
           CASE WHEN lead(g.decided_at) OVER w IS NOT NULL
                THEN lead(g.decided_at) OVER w + pol.superseded
                ELSE coalesce(g.decided_at, g.first_at) + pol.current END AS due_at,
           lead(g.decided_at) OVER w IS NOT NULL AS superseded
    FROM groups g
    JOIN policy pol ON pol.property = g.property
    WINDOW w AS (PARTITION BY g.subject_id, g.property ORDER BY g.grp)
),
due AS (
    SELECT subject_id, property, grp, superseded,
           bool_and(due_at <= p_as_of) OVER (PARTITION BY subject_id, property ORDER BY grp)
               AS with_all_before
    FROM timed
)
SELECT x.seq, x.property, CASE WHEN d.superseded THEN 'superseded' ELSE 'current' END
FROM grouped x
JOIN due d USING (subject_id, property, grp)
WHERE d.with_all_before
UNION ALL
SELECT e.seq, e.property, 'anonymised'
FROM consent_events e
JOIN policy pol ON pol.property = e.property
WHERE e.subject_id IS NULL AND e.recorded_at + pol.current <= p_as_of
$$
"""  # noqa: S608 (this file's constants)

# One purge at a time (any 64-bit number no other lock of this database uses).
PURGE_LOCK = 0x636F6E73656E7402

PURGE_FUNCTION = f"""
CREATE FUNCTION consent_retention_purge(
    p_as_of timestamptz, p_audit_id uuid, p_actor text, p_dry_run boolean
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    targets bigint[];
    counts jsonb;
    touched integer := 0;
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
           (SELECT coalesce(jsonb_object_agg(per_property.property, per_property.rules), '{{}}')
            FROM per_property)
    INTO targets, counts;
    IF NOT p_dry_run THEN
        PERFORM set_config('consent.erasure_id', p_audit_id::text, true);
        PERFORM set_config('consent.retention', 'on', true);
        touched := consent_erase_rows('delete', targets);
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
        'due', cardinality(targets), 'deleted', touched, 'by_property', counts
    );
END;
$$
"""  # noqa: S608 (this file's constants)


# `serve`'s purge (CONSENT_RETENTION_PURGE_HOURS), as the service's role: due now, never earlier;
# NULL without waiting when another purge runs.
PURGE_DUE_FUNCTION = f"""
CREATE FUNCTION consent_retention_purge_due(p_audit_id uuid) RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock({PURGE_LOCK}) THEN
        RETURN NULL;
    END IF;
    RETURN consent_retention_purge(now(), p_audit_id, 'serve', false);
END;
$$
"""


def _migration_0010_count_function() -> str:
    path = Path(__file__).with_name("2026_11_29_0010_stats_rollup.py")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.SUBTRACT)


SKIP = (
    "    -- FOR SHARE waits for a rollup in progress, then reads what it committed.\n",
    "    IF current_setting('consent.retention', true) = 'on' THEN\n"
    "        RETURN NULL;  -- a purge: the statistics outlive the events (migration 0013)\n"
    "    END IF;\n"
    "    -- FOR SHARE waits for a rollup in progress, then reads what it committed.\n",
)


def upgrade() -> None:
    op.execute("ALTER TABLE dsr_audit ALTER COLUMN identifier_type DROP NOT NULL")
    op.execute("ALTER TABLE dsr_audit ALTER COLUMN identifier_hash DROP NOT NULL")
    op.execute(DUE_FUNCTION)
    op.execute(PURGE_FUNCTION)
    op.execute(PURGE_DUE_FUNCTION)
    for function in (
        "consent_retention_due(timestamptz)",
        "consent_retention_purge(timestamptz, uuid, text, boolean)",
        "consent_retention_purge_due(uuid)",
    ):
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION consent_retention_purge_due(uuid) TO consent_api")
    count = _migration_0010_count_function()
    assert count.count(SKIP[0]) == 1
    op.execute(count.replace(*SKIP))


def downgrade() -> None:
    op.execute(_migration_0010_count_function())
    op.execute("DROP FUNCTION consent_retention_purge_due(uuid)")
    op.execute("DROP FUNCTION consent_retention_purge(timestamptz, uuid, text, boolean)")
    op.execute("DROP FUNCTION consent_retention_due(timestamptz)")
    op.execute("ALTER TABLE dsr_audit ALTER COLUMN identifier_hash SET NOT NULL")
    op.execute("ALTER TABLE dsr_audit ALTER COLUMN identifier_type SET NOT NULL")

"""Subjects' latest decisions, many in one call, on a plan made once per connection

The banner's state look-ups are answered in batches (ledger/decisions.py, docs/architecture.md
"The group read"): the wanted (subject, property) pairs arrive as two arrays and each is joined
laterally to its newest decision. Sent as a prepared statement, PostgreSQL planned that statement
again on every call: with the arrays' values known it estimates a batch's real size, without them
(the generic plan) a hundred rows, so the generic plan always looked dearer and was never kept.
Planning it means looking at every monthly partition and its indexes, about 1.1 ms with 35 of
them, against 0.1 ms to run it (a single look-up at 1M events).

Here the statement is the body of `consent_latest_decisions(subjects, properties)`, with
`plan_cache_mode = force_generic_plan` set for its calls alone: PL/pgSQL keeps its statement's
plan for the connection's life, so the plan is made once and each call only runs it. The
function reads as its caller (no SECURITY DEFINER): the service's role may read these columns.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = "consent_latest_decisions(uuid[], text[])"

# For each (subjects[i], properties[i]), its newest event that is a decision (a re-prompt is not
# one); a pair without a decision has no row.
LATEST_DECISIONS = """
CREATE FUNCTION consent_latest_decisions(subjects uuid[], properties text[])
RETURNS TABLE (property text, subject_id uuid, event_type text, source text,
               schema_version integer, choices jsonb, recorded_at timestamptz)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
    SELECT wanted.property, wanted.subject_id, latest.event_type, latest.source,
           latest.schema_version, latest.choices, latest.recorded_at
    FROM unnest(subjects, properties) AS wanted (subject_id, property)
    JOIN LATERAL (
        SELECT e.event_type, e.source, e.schema_version, e.choices, e.recorded_at
        FROM consent_events AS e
        WHERE e.subject_id = wanted.subject_id
          AND e.property = wanted.property
          AND e.event_type <> 're-prompt'
        ORDER BY e.seq DESC
        LIMIT 1
    ) AS latest ON true;
END;
$$
"""


def upgrade() -> None:
    op.execute(LATEST_DECISIONS)
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO consent_api")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")

"""A subject's latest decision says which signals were present when it was made

The state look-up applies a signal the current version records as a decision (GPC or DNT as a
reject-all, itsailor's policy) when the latest decision was not made under it, as the banner
client does (docs/banner.md, "Signals"): `consent_latest_decisions` (0017) now also returns the
decision's `gpc` and `dnt`. The function is replaced (its result type changes), with the same
plan setting and grants; the downgrade puts 0017's back.

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = "consent_latest_decisions(uuid[], text[])"

FUNCTION = """
CREATE FUNCTION consent_latest_decisions(subjects uuid[], properties text[])
RETURNS TABLE (property text, subject_id uuid, event_type text, source text,
               schema_version integer, choices jsonb, recorded_at timestamptz{returned})
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
    SELECT wanted.property, wanted.subject_id, latest.event_type, latest.source,
           latest.schema_version, latest.choices, latest.recorded_at{selected}
    FROM unnest(subjects, properties) AS wanted (subject_id, property)
    JOIN LATERAL (
        SELECT e.event_type, e.source, e.schema_version, e.choices, e.recorded_at{read}
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


def _replace(function: str) -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
    op.execute(function)
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO consent_api")


def upgrade() -> None:
    _replace(
        FUNCTION.format(
            returned=", gpc boolean, dnt boolean",
            selected=", latest.gpc, latest.dnt",
            read=", e.gpc, e.dnt",
        )
    )


def downgrade() -> None:
    _replace(FUNCTION.format(returned="", selected="", read=""))

"""A decision that reaches the service after a later one from the same browser is not the state

A browser sends its decisions one after another, but not always in order: when a page is hidden
the client sends what is still unsent as beacons, beside a request that may still be under way,
and each goes on a connection of its own. An `accept-all` followed a moment later by a `withdraw`
could be stored withdrawal first, and the acceptance, stored last, was the subject's state (a
review of 2026-11-30).

Client 1.0.3 makes its event ids UUIDv7 (RFC 9562): the browser's time in milliseconds, then a
counter, so its ids sort in the order it made its events. `consent_latest_decisions` now skips a
decision that another decision of the same subject and property stored before it, at most
`WINDOW` earlier, shows to be older: both from a browser (not a DSR entry), both ids UUIDv7,
and the one stored first the greater. The state is the latest decision by `seq` that no such
decision overtakes; every event stays stored as it came, and every other id (UUIDv4, a DSR
entry's, an id the service chose) orders by `seq` alone, as before.

The window bounds what a browser's clock can do: out-of-order events are ones in flight at the
same moment, seconds apart, while a clock set back (or a client sending ids it made up) can make
a decision look older than one stored long ago. Only a decision stored within `WINDOW` of it can
overtake it. The function also returns the decision's `seq`, so an erasure knows which decision
is the latest the way the state does (dsr/erasure.py).

Revision ID: 0026
Revises: 0025
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = "consent_latest_decisions(uuid[], text[])"
WINDOW = "interval '60 seconds'"

# The 15th character of a UUID's text is its version.
OVERTAKEN = f"""
          AND NOT (
              e.source <> 'dsr' AND substr(e.event_id::text, 15, 1) = '7'
              AND EXISTS (
                  SELECT 1 FROM consent_events AS later
                  WHERE later.subject_id = e.subject_id
                    AND later.property = e.property
                    AND later.event_type <> 're-prompt'
                    AND later.source <> 'dsr'
                    AND later.seq < e.seq
                    AND later.recorded_at >= e.recorded_at - {WINDOW}
                    AND substr(later.event_id::text, 15, 1) = '7'
                    AND later.event_id > e.event_id
              )
          )"""

FUNCTION = """
CREATE FUNCTION consent_latest_decisions(subjects uuid[], properties text[])
RETURNS TABLE (property text, subject_id uuid, event_type text, source text,
               schema_version integer, choices jsonb, recorded_at timestamptz, gpc boolean,
               dnt boolean{returned})
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
    SELECT wanted.property, wanted.subject_id, latest.event_type, latest.source,
           latest.schema_version, latest.choices, latest.recorded_at, latest.gpc,
           latest.dnt{selected}
    FROM unnest(subjects, properties) AS wanted (subject_id, property)
    JOIN LATERAL (
        SELECT e.event_type, e.source, e.schema_version, e.choices, e.recorded_at, e.gpc,
               e.dnt{read}
        FROM consent_events AS e
        WHERE e.subject_id = wanted.subject_id
          AND e.property = wanted.property
          AND e.event_type <> 're-prompt'{overtaken}
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
            returned=", seq bigint", selected=", latest.seq", read=", e.seq", overtaken=OVERTAKEN
        )
    )


def downgrade() -> None:
    _replace(FUNCTION.format(returned="", selected="", read="", overtaken=""))

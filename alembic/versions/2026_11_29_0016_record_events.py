"""Events are stored only through `consent_record_events`: the service's role inserts no row itself

Until now `consent_api` could insert into `consent_events`, `consent_event_ids` and
`ledger_receipts` directly. The writer's one statement keeps an event's id unique across the
monthly partitions (its id first, into `consent_event_ids`) and names the batch's signed receipt,
but nothing in the database made anyone take that path: with the service's credentials a second
row with a stored event's id, or an event without its receipt, could be written by hand.

Now the statement is the body of `consent_record_events(batch, jws, leaves)` (SECURITY DEFINER,
the owner's), and the role may execute it but insert into none of the three tables. The writer
calls it (ledger/writer.py); docs/guarantees.md, "Least privilege", lists it.

Until now the DSR team's written withdrawals (source `dsr`) were inserted straight into
`consent_events`, so their ids never reached `consent_event_ids`; they are registered here, and
from now on take the same function as the banner's events. Afterwards every event's id is there.

The statement is frozen here as it stood at this revision; `tests/ledger/test_definition.py` fails
when `NewEvent` changes without a migration that re-creates the function.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = "consent_record_events(jsonb, text, bytea)"

# $1: the batch, one JSON array of row objects; $2: the batch's signed receipt (JWS) or NULL;
# $3: the batch's leaves. Returns the ids of the events stored (those whose id was new).
RECORD_EVENTS = """
CREATE FUNCTION consent_record_events(jsonb, text, bytea) RETURNS SETOF uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    RETURN QUERY
    WITH input AS MATERIALIZED ( SELECT * FROM jsonb_to_recordset($1::jsonb) AS r(event_id UUID,
      property TEXT, subject_id UUID, event_type TEXT, schema_version INTEGER, choices JSONB,
      effective JSONB, gpc BOOLEAN, dnt BOOLEAN, signals_applied JSONB, source TEXT,
      entered_by TEXT, ip_hash text, user_hash text, hash_key_id VARCHAR(32), user_agent TEXT,
      page_url TEXT, tcf_string TEXT, gpp_string TEXT, request_hash text,
      recorded_at TIMESTAMP WITH TIME ZONE, salt BYTEA, identity BYTEA, leaf BYTEA)),
    new_ids AS (
      INSERT INTO consent_event_ids (event_id, recorded_at) SELECT event_id, recorded_at
      FROM input ON CONFLICT (event_id) DO NOTHING RETURNING event_id),
    receipt AS (
      INSERT INTO ledger_receipts (jws, leaves) SELECT $2::text, $3::bytea
      WHERE $2::text IS NOT NULL RETURNING id)
    INSERT INTO consent_events (event_id, property, subject_id, event_type, schema_version,
      choices, effective, gpc, dnt, signals_applied, source, entered_by, ip_hash, user_hash,
      hash_key_id, user_agent, page_url, tcf_string, gpp_string, request_hash, recorded_at, salt,
      identity, leaf, receipt)
    SELECT event_id, property, subject_id, event_type, schema_version, choices, effective, gpc,
      dnt, signals_applied, source, entered_by, decode(ip_hash, 'hex'), decode(user_hash, 'hex'),
      hash_key_id, user_agent, page_url, tcf_string, gpp_string, decode(request_hash, 'hex'),
      recorded_at, salt, identity, leaf, (SELECT id FROM receipt)
    FROM input WHERE event_id IN (SELECT event_id FROM new_ids) RETURNING event_id;
END;
$$
"""

# What 0014 and 0012 granted, taken back by upgrade and given back by downgrade.
INSERTABLE = (
    "event_id, property, subject_id, event_type, schema_version, choices, effective, gpc, dnt, "
    "signals_applied, ip_hash, user_hash, hash_key_id, user_agent, page_url, tcf_string, "
    "gpp_string, request_hash, recorded_at, anonymised_at, source, entered_by, salt, identity, "
    "leaf, receipt"
)


def upgrade() -> None:
    op.execute(
        "INSERT INTO consent_event_ids (event_id, recorded_at)"
        " SELECT event_id, recorded_at FROM consent_events WHERE source = 'dsr'"
        " ON CONFLICT (event_id) DO NOTHING"
    )
    op.execute(RECORD_EVENTS)
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO consent_api")
    op.execute(
        "REVOKE INSERT ON consent_events, consent_event_ids, ledger_receipts FROM consent_api"
    )


def downgrade() -> None:
    op.execute(f"GRANT INSERT ({INSERTABLE}) ON consent_events TO consent_api")
    op.execute("GRANT INSERT ON consent_event_ids TO consent_api")
    op.execute("GRANT INSERT (jws, leaves) ON ledger_receipts TO consent_api")
    op.execute(f"DROP FUNCTION {SIGNATURE}")

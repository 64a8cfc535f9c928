"""An event's schema version is checked once per batch, by `consent_record_events`, not per row

Every event names the schema version its banner showed, and until now a foreign key from
`consent_events (property, schema_version)` to `consent_schema_versions` checked it. PostgreSQL
checks a foreign key one inserted row at a time: for each event it plans-and-starts a query
(`SELECT … FOR KEY SHARE`), locks the version's row, and ends it. Profiled in the database with the
writer's statement in batches of 30 (`perf`), that check was about 14 % of the statement's CPU,
more than the event's own heap insert; with two writers both lock the same version row, which
PostgreSQL records as a multixact.

A batch names one or two versions. `consent_record_events`, the only way an event is stored
(migration 0016), now checks the distinct (property, version) pairs of the batch, once each, and
refuses the whole statement with SQLSTATE 23503 (foreign_key_violation), the error the foreign
key raised, naming the pair; the writer retries a refused batch row by row, so only the event at
fault fails, as before. Nothing is lost by dropping the row lock: a version row can never go away
(`consent_schema_versions_immutable` refuses DELETE and UPDATE, `…_no_truncate` TRUNCATE, for every
role), and the service's role cannot insert an event by any other path. docs/retention.md,
"Idempotency across months", has the same reasoning for the event ids.

The statement is frozen here as it stands at this revision (`tests/ledger/test_definition.py`).

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-29
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FOREIGN_KEY = "fk_consent_events_property_consent_schema_versions"

# $1: the batch, one JSON array of row objects; $2: the batch's signed receipt (JWS) or NULL;
# $3: the batch's leaves. Returns the ids of the events stored (those whose id was new).
RECORD_EVENTS = """
CREATE OR REPLACE FUNCTION consent_record_events(jsonb, text, bytea) RETURNS SETOF uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    unknown record;
BEGIN
    SELECT wanted.property, wanted.version INTO unknown
    FROM (SELECT DISTINCT r.property, r.schema_version AS version
          FROM jsonb_to_recordset($1::jsonb) AS r(property TEXT, schema_version INTEGER)) AS wanted
    WHERE NOT EXISTS (SELECT FROM consent_schema_versions AS v
                      WHERE v.property = wanted.property AND v.version = wanted.version)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'schema version % of property % is not published',
            unknown.version, quote_literal(unknown.property)
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = 'every event names a row of consent_schema_versions';
    END IF;
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


def _record_events_0016() -> str:
    """The function as migration 0016 froze it (its module is not importable by name)."""
    path = Path(__file__).with_name("2026_11_29_0016_record_events.py")
    spec = importlib.util.spec_from_file_location("record_events_0016", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.RECORD_EVENTS).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def upgrade() -> None:
    # CREATE OR REPLACE keeps the function's owner, its grants (EXECUTE to consent_api only)
    # and its oid.
    op.execute(RECORD_EVENTS)
    op.execute(f"ALTER TABLE consent_events DROP CONSTRAINT {FOREIGN_KEY}")


def downgrade() -> None:
    op.execute(
        f"ALTER TABLE consent_events ADD CONSTRAINT {FOREIGN_KEY}"
        " FOREIGN KEY (property, schema_version)"
        " REFERENCES consent_schema_versions (property, version)"
    )
    op.execute(_record_events_0016())

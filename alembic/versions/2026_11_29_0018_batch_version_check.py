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

The statement itself is 0016's, read from that migration; only the check goes before it
(`tests/ledger/test_definition.py` reads the function as the database holds it).

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

# The check, put before 0016's statement: the batch's distinct (property, version) pairs, each
# looked up once; an unknown one refuses the whole statement with the foreign key's own error.
CHECK_VERSIONS = """DECLARE
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
    RETURN QUERY"""
STATEMENT_START = "BEGIN\n    RETURN QUERY"


def _record_events_0016() -> str:
    """The function as migration 0016 froze it (its module is not importable by name)."""
    path = Path(__file__).with_name("2026_11_29_0016_record_events.py")
    spec = importlib.util.spec_from_file_location("record_events_0016", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.RECORD_EVENTS).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def record_events() -> str:
    """0016's function with the check before its statement (which is unchanged)."""
    function = _record_events_0016()
    assert function.count(STATEMENT_START) == 1
    return function.replace(STATEMENT_START, CHECK_VERSIONS)


def upgrade() -> None:
    # CREATE OR REPLACE keeps the function's owner, its grants (EXECUTE to consent_api only)
    # and its oid.
    op.execute(record_events())
    op.execute(f"ALTER TABLE consent_events DROP CONSTRAINT {FOREIGN_KEY}")


def downgrade() -> None:
    op.execute(
        f"ALTER TABLE consent_events ADD CONSTRAINT {FOREIGN_KEY}"
        " FOREIGN KEY (property, schema_version)"
        " REFERENCES consent_schema_versions (property, version)"
    )
    op.execute(_record_events_0016())

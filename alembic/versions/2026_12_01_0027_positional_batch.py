"""The writer's batch travels as one array per row, not one object per row

`consent_record_events` read its batch, a JSON array of row objects, with `jsonb_to_recordset`,
and walked it three times: once for the batch's earliest and latest time, once for its
(property, version) pairs, once for the rows. Parsing row objects into jsonb is the larger share
of that: every object's 24 keys are sent, parsed, sorted and looked up again for each row.

Now each row is a JSON array of the same 24 values in `NewEvent`'s field order (ledger/event.py),
read by position (`e->>0`), and the checks share one walk of the batch. Measured with
`bench/record_cost.py` (the statement alone, this function against 0024's, interleaved), the
statement costs PostgreSQL what 0024's did, within a few µs (the checks added below took back what
reading by position saved); the writer spends 2.0 against 3.0 µs an event to serialise the batch
(docs/architecture.md, "The group commit").

A batch of row objects, as the release before this one sends it, is still taken: mid rolling
upgrade its replicas write into a database already at this revision (docs/architecture.md,
"Migrations"). Such a batch is first turned into arrays, value for value, then stored the same
way. What is refused, and in which order, is as before: the event time first (`CR001`), then
each value as it is stored, a key id longer than 32 characters even on an id already stored (0024
read it as `varchar(32)`). A batch the writer never sends may be refused with another error (a row
that is neither array nor object reads as a row of nothing). New: a batch naming one new event id
twice is refused (`23505`, the whole statement undone); 0024 stored both rows, since only the
writer kept them apart. A review of 2026-12-01 compared the two functions over these cases.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-01
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# NewEvent's fields at this revision, in order, with the SQL type each is read as (the hashes
# arrive as hex text and are decoded when stored; hash_key_id as text, so that the insert's own
# check refuses one too long rather than a cast cutting it).
COLUMNS = (
    ("event_id", "uuid"),
    ("property", "text"),
    ("subject_id", "uuid"),
    ("event_type", "text"),
    ("schema_version", "integer"),
    ("choices", "jsonb"),
    ("effective", "jsonb"),
    ("gpc", "boolean"),
    ("dnt", "boolean"),
    ("signals_applied", "jsonb"),
    ("source", "text"),
    ("entered_by", "text"),
    ("ip_hash", "text"),
    ("user_hash", "text"),
    ("hash_key_id", "text"),
    ("user_agent", "text"),
    ("page_url", "text"),
    ("tcf_string", "text"),
    ("gpp_string", "text"),
    ("request_hash", "text"),
    ("recorded_at", "timestamptz"),
    ("salt", "bytea"),
    ("identity", "bytea"),
    ("leaf", "bytea"),
)
POSITION = {name: position for position, (name, _) in enumerate(COLUMNS)}
HEX = ("ip_hash", "user_hash", "request_hash")


def read(name: str) -> str:
    """A row's value by position: a JSON null is SQL NULL, as jsonb_to_recordset read it."""
    position = POSITION[name]
    kind = dict(COLUMNS)[name]
    if kind == "jsonb":
        return f"nullif(e->{position}, 'null'::jsonb)"
    if kind == "text":
        return f"e->>{position}"
    return f"(e->>{position})::{kind}"


def stored(name: str) -> str:
    return f"decode({name}, 'hex')" if name in HEX else name


NAMES = ", ".join(name for name, _ in COLUMNS)
# A row object's values as text (jsonb ones as jsonb), so each is cast once, by position, below.
AS_TEXT = ", ".join(f"{name} {'jsonb' if kind == 'jsonb' else 'text'}" for name, kind in COLUMNS)

NOT_IN_FORCE = (
    "'schema version % of property % was not in force (not published, not in effect yet, or "
    "cancelled)'"
)

RECORD_EVENTS = f"""
CREATE OR REPLACE FUNCTION consent_record_events(jsonb, text, bytea) RETURNS SETOF uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    batch jsonb := $1;
    unknown record;
    earliest timestamptz;
    latest timestamptz;
    allowed interval;
    properties text[];
    version_texts text[];
    firsts timestamptz[];
    longest_key integer;
BEGIN
    IF jsonb_typeof(batch->0) = 'object' THEN
        SELECT coalesce(jsonb_agg(jsonb_build_array({NAMES})), '[]'::jsonb) INTO batch
        FROM jsonb_to_recordset($1) AS r({AS_TEXT});
    END IF;
    -- One walk of the batch for every check. Each value is cast where 0024 cast it, so a batch
    -- is refused for the same reason first (the event time before a version that is no number).
    SELECT min(g.earliest), max(g.latest), array_agg(g.property), array_agg(g.version),
           array_agg(g.earliest), max(g.longest_key)
      INTO earliest, latest, properties, version_texts, firsts, longest_key
    FROM (SELECT {read("property")} AS property, e->>4 AS version,
                 min({read("recorded_at")}) AS earliest, max({read("recorded_at")}) AS latest,
                 max(octet_length(e->>14)) AS longest_key
          FROM jsonb_array_elements(batch) AS e
          GROUP BY 1, 2) AS g;
    allowed := coalesce((SELECT w.tolerance FROM consent_event_time_window AS w),
                        interval '5 minutes');
    IF earliest < clock_timestamp() - allowed OR latest > clock_timestamp() + allowed THEN
        RAISE EXCEPTION 'an event''s time is not the database''s: % to % against %',
            earliest, latest, clock_timestamp()
            USING ERRCODE = 'CR001',
                  DETAIL = format('events are stored within %s of the database''s time', allowed),
                  HINT = 'the service''s clock and the database''s differ: check both hosts'' NTP';
    END IF;
    SELECT wanted.property, wanted.version INTO unknown
    FROM unnest(properties, version_texts::integer[], firsts) AS wanted(property, version, earliest)
    WHERE NOT EXISTS (SELECT FROM consent_schema_versions AS v
                      WHERE v.property = wanted.property AND v.version = wanted.version
                        AND coalesce(v.effective_at, v.published_at) <= wanted.earliest + allowed)
       OR EXISTS (SELECT FROM consent_schema_cancellations AS c
                  WHERE c.property = wanted.property AND c.version = wanted.version)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION {NOT_IN_FORCE},
            unknown.version, quote_literal(unknown.property)
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'consent_events_version_in_force',
                  DETAIL = 'every event names a row of consent_schema_versions';
    END IF;
    -- Refused for every row, a known id's too, as 0024's read as varchar(32) refused it (its
    -- length in characters, trailing spaces aside, looked at only when its bytes may exceed it).
    IF longest_key > 32 THEN
        IF EXISTS (SELECT FROM jsonb_array_elements(batch) AS e
                   WHERE length(rtrim(e->>14, ' ')) > 32) THEN
            RAISE EXCEPTION 'value too long for type character varying(32)'
                USING ERRCODE = 'string_data_right_truncation';
        END IF;
    END IF;
    RETURN QUERY
    WITH input AS MATERIALIZED (
      SELECT {", ".join(f"{read(name)} AS {name}" for name, _ in COLUMNS)}
      FROM jsonb_array_elements(batch) AS e),
    new_ids AS (
      INSERT INTO consent_event_ids (event_id, recorded_at) SELECT event_id, recorded_at
      FROM input ON CONFLICT (event_id) DO NOTHING RETURNING event_id),
    receipt AS (
      INSERT INTO ledger_receipts (jws, leaves) SELECT $2::text, $3::bytea
      WHERE $2::text IS NOT NULL RETURNING id),
    kept AS (
      INSERT INTO consent_events ({NAMES}, receipt)
      SELECT {", ".join(stored(name) for name, _ in COLUMNS)}, (SELECT id FROM receipt)
      FROM input WHERE event_id IN (SELECT event_id FROM new_ids) RETURNING event_id)
    -- consent_event_ids keeps an id once, so a batch naming a new id twice stores more events
    -- than ids: refused, which undoes the statement (0024 stored both rows).
    SELECT kept.event_id FROM kept
    WHERE consent_one_event_per_id((SELECT count(*) FROM kept), (SELECT count(*) FROM new_ids));
END;
$$
"""  # noqa: S608 (column names and positions only)


def record_events_0024() -> str:
    """The function as migration 0024 left it (a downgrade restores it exactly)."""
    path = Path(__file__).with_name("2026_11_30_0024_evidence_time_and_pointers.py")
    spec = importlib.util.spec_from_file_location("evidence_time_0024", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.record_events())


# Raises when a batch stored more events than it registered ids (called once a statement, by
# consent_record_events as its owner; nobody else may).
ONE_EVENT_PER_ID = """
CREATE FUNCTION consent_one_event_per_id(stored bigint, registered bigint) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
    IF stored <> registered THEN
        RAISE EXCEPTION 'an event id appears more than once in the batch'
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'pk_consent_event_ids';
    END IF;
    RETURN true;
END;
$$
"""


def upgrade() -> None:
    op.execute(ONE_EVENT_PER_ID)
    op.execute("REVOKE ALL ON FUNCTION consent_one_event_per_id(bigint, bigint) FROM PUBLIC")
    # CREATE OR REPLACE keeps the function's owner, its grants (EXECUTE to consent_api only) and
    # its oid.
    op.execute(RECORD_EVENTS)


def downgrade() -> None:
    op.execute(record_events_0024())
    op.execute("DROP FUNCTION consent_one_event_per_id(bigint, bigint)")

"""An event's time is the database's, on a version in force; version pointers move only forward

What the service's own role could do that the evidence should not allow (two reviews of
2026-11-30, connected as that role):

- **Back-dated events.** `consent_record_events` (0016, 0018) stored each event's `recorded_at`
  as the batch gave it: the role could store an `accept-all` dated years before the version it
  names was published, and `ledger verify` recomputes its leaf from what is stored. The writer
  stamps an event when its request arrives and computes its leaf (and the batch's receipt) from
  that time, so the database cannot stamp it instead: the function now refuses a batch holding
  a time further than `consent_event_time_window.tolerance` (5 minutes) from the database's clock
  when it checks (`clock_timestamp()`, not the statement's start, which a slow statement could
  hold back), with SQLSTATE CR001, before storing anything. A batch commits within milliseconds
  of its requests (its statement gives up after the writer's 30 s command timeout); the window
  covers a slow commit and clocks a little apart. Only the owner may change the window (a
  restore of old events goes in as the owner, by COPY, not through the function). The service
  answers CR001 with a 503 and logs the clocks' difference as an operator's matter
  (core/db_errors.py).
- **Events on a version not in force.** The batch's version check (0018) asked only that the
  version exist. It now asks that it was in force at the event's time (its `effective_at`, or
  `published_at`, no later than the event's `recorded_at` plus the window) and never cancelled,
  and refuses the batch with 0018's error (foreign_key_violation) under the constraint name
  `consent_events_version_in_force`. The service checks the same first (`version_shown`); a
  cancellation made in another process within its cached pointer's second is answered 422.
- **Pointers moved at will.** The role updates `consent_properties` when it publishes, promotes
  or cancels a version, and its grant let it set any value: point a property at a version that
  does not exist (every banner answered 404), back at an older one, at an announced one a week
  early or a cancelled one, or with a `last_material_version` of 0 (a material change no longer
  asks anyone again). Now `consent_properties_pointers` (BEFORE INSERT OR UPDATE) holds every
  role without the owner's privileges to what publishing does: a property starts at 0 with
  nothing pending; its current version only moves forward, to a published version in effect and
  never cancelled, with that version's own `last_material_version`; a pending version is a
  published one after the current, not cancelled; `updated_at` is the time of writing.
- **Versions and cancellations.** `consent_schema_versions_lineage` (BEFORE INSERT) holds a new
  version's `last_material_version` to its own number when material, else to the property's
  current one, stamps `published_at` with the time of writing and refuses an `effective_at`
  before it. `consent_schema_cancellations_pending` lets the role cancel only a version after the
  current one (the pending one) and stamps `cancelled_at`. Whether a version is material
  (whether it changes more than wording) stays the service's check (`material_difference`).

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-30
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENT_TIME_SQLSTATE = "CR001"

WINDOW = """
CREATE TABLE consent_event_time_window (
    only_row boolean DEFAULT true NOT NULL,
    tolerance interval DEFAULT interval '5 minutes' NOT NULL,
    CONSTRAINT pk_consent_event_time_window PRIMARY KEY (only_row),
    CONSTRAINT ck_consent_event_time_window_only_row CHECK (only_row),
    CONSTRAINT ck_consent_event_time_window_tolerance CHECK (tolerance >= interval '0 seconds')
)
"""

# 0018's DECLARE, and the time check that now comes first in its body.
DECLARED = "DECLARE\n    unknown record;\nBEGIN\n"
CHECK_TIME = """DECLARE
    unknown record;
    earliest timestamptz;
    latest timestamptz;
    allowed interval;
BEGIN
    SELECT min(r.recorded_at), max(r.recorded_at) INTO earliest, latest
    FROM jsonb_to_recordset($1::jsonb) AS r(recorded_at timestamptz);
    allowed := coalesce((SELECT w.tolerance FROM consent_event_time_window AS w),
                        interval '5 minutes');
    IF earliest < clock_timestamp() - allowed OR latest > clock_timestamp() + allowed THEN
        RAISE EXCEPTION 'an event''s time is not the database''s: % to % against %',
            earliest, latest, clock_timestamp()
            USING ERRCODE = 'CR001',
                  DETAIL = format('events are stored within %s of the database''s time', allowed),
                  HINT = 'the service''s clock and the database''s differ: check both hosts'' NTP';
    END IF;
"""

POINTERS = """
CREATE FUNCTION consent_properties_pointers() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    lineage integer;
BEGIN
    IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE')
    THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.current_version <> 0 OR NEW.last_material_version <> 0
           OR NEW.pending_version IS NOT NULL THEN
            RAISE EXCEPTION 'a property starts with no version: its versions are published'
                USING ERRCODE = 'check_violation';
        END IF;
        NEW.created_at := now();
        NEW.updated_at := now();
        RETURN NEW;
    END IF;
    IF NEW.name <> OLD.name OR NEW.created_at <> OLD.created_at THEN
        RAISE EXCEPTION 'a property''s name and creation time do not change'
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.current_version < OLD.current_version THEN
        RAISE EXCEPTION 'the current version of % moves only forward (from % to %)',
            quote_literal(NEW.name), OLD.current_version, NEW.current_version
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.current_version <> OLD.current_version
       OR NEW.last_material_version <> OLD.last_material_version THEN
        -- A version current now: published, in effect, never cancelled, with its own lineage.
        SELECT v.last_material_version INTO lineage FROM consent_schema_versions AS v
        WHERE v.property = NEW.name AND v.version = NEW.current_version
          AND coalesce(v.effective_at, v.published_at) <= now()
          AND NOT EXISTS (SELECT FROM consent_schema_cancellations AS c
                          WHERE c.property = v.property AND c.version = v.version);
        IF NOT FOUND OR NEW.last_material_version <> lineage THEN
            RAISE EXCEPTION 'version % of % is not published, in effect and not cancelled with '
                            'last material version %',
                NEW.current_version, quote_literal(NEW.name), NEW.last_material_version
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    IF NEW.pending_version IS NOT NULL AND (
        NEW.pending_version <= NEW.current_version
        OR NOT EXISTS (SELECT FROM consent_schema_versions AS v
                       WHERE v.property = NEW.name AND v.version = NEW.pending_version)
        OR EXISTS (SELECT FROM consent_schema_cancellations AS c
                   WHERE c.property = NEW.name AND c.version = NEW.pending_version)) THEN
        RAISE EXCEPTION 'a pending version of % is a published version after the current one, '
                        'not cancelled', quote_literal(NEW.name)
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$
"""

LINEAGE = """
CREATE FUNCTION consent_schema_versions_lineage() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    expected integer;
BEGIN
    IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE')
    THEN
        RETURN NEW;
    END IF;
    -- (plpgsql reads an IF's condition up to its first THEN: no CASE in it)
    expected := NEW.version;
    IF NOT NEW.material THEN
        SELECT p.last_material_version INTO expected FROM consent_properties AS p
        WHERE p.name = NEW.property;
    END IF;
    IF NEW.last_material_version IS DISTINCT FROM expected THEN
        RAISE EXCEPTION 'version % of % names % as its last material version, not %',
            NEW.version, quote_literal(NEW.property), NEW.last_material_version, expected
            USING ERRCODE = 'check_violation';
    END IF;
    -- Published now, in effect now or later: never back-dated.
    NEW.published_at := now();
    IF NEW.effective_at < now() THEN
        RAISE EXCEPTION 'version % of % cannot take effect before it is published',
            NEW.version, quote_literal(NEW.property)
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$
"""


CANCELLATION = """
CREATE FUNCTION consent_schema_cancellations_pending() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
BEGIN
    IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE')
    THEN
        RETURN NEW;
    END IF;
    -- Only a version after the current one (the pending one) can be cancelled: not one in force.
    IF NEW.version <= (SELECT p.current_version FROM consent_properties AS p
                       WHERE p.name = NEW.property) THEN
        RAISE EXCEPTION 'version % of % has taken effect: it cannot be cancelled',
            NEW.version, quote_literal(NEW.property)
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.cancelled_at := now();
    RETURN NEW;
END;
$$
"""


def _module(name: str, filename: str) -> object:
    path = Path(__file__).with_name(filename)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record_events_0018() -> str:
    """The function as migration 0018 left it."""
    module = _module("batch_version_check_0018", "2026_11_29_0018_batch_version_check.py")
    return str(module.record_events())  # type: ignore[attr-defined]


# 0018's version check (the batch's distinct versions, each looked up once), which now asks more
# of each: a version in force at the event's time (within the window), and not cancelled.
UNPUBLISHED = """    FROM (SELECT DISTINCT r.property, r.schema_version AS version
          FROM jsonb_to_recordset($1::jsonb) AS r(property TEXT, schema_version INTEGER)) AS wanted
    WHERE NOT EXISTS (SELECT FROM consent_schema_versions AS v
                      WHERE v.property = wanted.property AND v.version = wanted.version)
"""
NOT_IN_FORCE = """    FROM (SELECT r.property, r.schema_version AS version,
                 min(r.recorded_at) AS earliest
          FROM jsonb_to_recordset($1::jsonb)
               AS r(property TEXT, schema_version INTEGER, recorded_at TIMESTAMPTZ)
          GROUP BY r.property, r.schema_version) AS wanted
    WHERE NOT EXISTS (SELECT FROM consent_schema_versions AS v
                      WHERE v.property = wanted.property AND v.version = wanted.version
                        AND coalesce(v.effective_at, v.published_at) <= wanted.earliest + allowed)
       OR EXISTS (SELECT FROM consent_schema_cancellations AS c
                  WHERE c.property = wanted.property AND c.version = wanted.version)
"""
UNPUBLISHED_MESSAGE = """'schema version % of property % is not published'"""
NOT_IN_FORCE_MESSAGE = (
    "'schema version % of property % was not in force (not published, not in effect yet, or "
    "cancelled)'"
)
UNPUBLISHED_ERROR = "USING ERRCODE = 'foreign_key_violation',"
NOT_IN_FORCE_ERROR = (
    "USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'consent_events_version_in_force',"
)


def record_events() -> str:
    """0018's function with the time check first, and cancelled versions refused."""
    function = record_events_0018()
    for old, new in (
        (DECLARED, CHECK_TIME),
        (UNPUBLISHED, NOT_IN_FORCE),
        (UNPUBLISHED_MESSAGE, NOT_IN_FORCE_MESSAGE),
        (UNPUBLISHED_ERROR, NOT_IN_FORCE_ERROR),
    ):
        assert function.count(old) == 1, old
        function = function.replace(old, new)
    return function


def upgrade() -> None:
    op.execute(WINDOW)
    op.execute("INSERT INTO consent_event_time_window DEFAULT VALUES")
    op.execute("REVOKE ALL ON consent_event_time_window FROM PUBLIC")
    # CREATE OR REPLACE keeps the function's owner, its grants (EXECUTE to consent_api only) and
    # its oid.
    op.execute(record_events())
    op.execute(POINTERS)
    op.execute("REVOKE ALL ON FUNCTION consent_properties_pointers() FROM PUBLIC")
    op.execute(
        "CREATE TRIGGER consent_properties_pointers BEFORE INSERT OR UPDATE ON consent_properties"
        " FOR EACH ROW EXECUTE FUNCTION consent_properties_pointers()"
    )
    op.execute(CANCELLATION)
    op.execute("REVOKE ALL ON FUNCTION consent_schema_cancellations_pending() FROM PUBLIC")
    op.execute(
        "CREATE TRIGGER consent_schema_cancellations_pending BEFORE INSERT"
        " ON consent_schema_cancellations"
        " FOR EACH ROW EXECUTE FUNCTION consent_schema_cancellations_pending()"
    )
    op.execute(LINEAGE)
    op.execute("REVOKE ALL ON FUNCTION consent_schema_versions_lineage() FROM PUBLIC")
    op.execute(
        "CREATE TRIGGER consent_schema_versions_lineage BEFORE INSERT ON consent_schema_versions"
        " FOR EACH ROW EXECUTE FUNCTION consent_schema_versions_lineage()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER consent_schema_cancellations_pending ON consent_schema_cancellations")
    op.execute("DROP FUNCTION consent_schema_cancellations_pending()")
    op.execute("DROP TRIGGER consent_schema_versions_lineage ON consent_schema_versions")
    op.execute("DROP FUNCTION consent_schema_versions_lineage()")
    op.execute("DROP TRIGGER consent_properties_pointers ON consent_properties")
    op.execute("DROP FUNCTION consent_properties_pointers()")
    op.execute(record_events_0018())
    op.execute("DROP TABLE consent_event_time_window")

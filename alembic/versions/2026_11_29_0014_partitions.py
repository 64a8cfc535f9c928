"""Years of records: consent_events partitioned by month, event ids kept apart, hashes as bytes

- `consent_events` becomes a table partitioned by range of `recorded_at`, one partition a month
  (`consent_events_YYYY_MM`, UTC), and `consent_events_default` for a row outside every month
  (an alarm: it stays empty while partitions are made ahead). Every index is per partition, so an
  insert maintains indexes over one month, not over the whole history.
- PostgreSQL cannot keep `event_id` unique across partitions, so `consent_event_ids` (not
  partitioned) holds each stored event's id and time. The writer inserts there first and stores
  only the events whose id was new, in one statement (ledger/writer.py); a retry finds its event
  through it. An event that leaves the table takes its id along (the delete trigger), as its
  unique index entry did before.
- `ip_hash`, `user_hash` and `request_hash` are stored as 32 bytes, not 64 hex characters. The
  API, exports and leaves still show hex (ledger/tables.py, `HexDigest`).
- `consent_events_add_months(p_from, p_to)` (the owner's) makes the monthly partitions covering
  that span; `consent_events_months_ahead()` (the service's role may call it) makes this month's
  and the next three, and says how many rows the default partition holds.
- The rows are copied into the new table, `seq` kept, its sequence continued where the old one
  stopped (a seq once handed out is never reused: a tombstone may hold it). The copy holds an
  ACCESS EXCLUSIVE lock on the old table: writes wait (or fail) until the migration commits.
  docs/retention.md, "Partitions", says how long it takes.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HASHES = ("ip_hash", "user_hash", "request_hash")

# Every column, in the table's order, with its type after this migration.
COLUMNS = (
    ("seq", "bigint GENERATED ALWAYS AS IDENTITY"),
    ("event_id", "uuid NOT NULL"),
    ("property", "text NOT NULL"),
    ("subject_id", "uuid"),
    ("event_type", "text NOT NULL"),
    ("schema_version", "integer NOT NULL"),
    ("choices", "jsonb NOT NULL"),
    ("effective", "jsonb NOT NULL"),
    ("gpc", "boolean NOT NULL"),
    ("dnt", "boolean NOT NULL"),
    ("signals_applied", "jsonb NOT NULL"),
    ("ip_hash", "bytea"),
    ("user_hash", "bytea"),
    ("hash_key_id", "varchar(32)"),
    ("user_agent", "text"),
    ("page_url", "text"),
    ("tcf_string", "text"),
    ("gpp_string", "text"),
    ("request_hash", "bytea"),
    ("recorded_at", "timestamptz NOT NULL"),
    ("anonymised_at", "timestamptz"),
    ("source", "text NOT NULL DEFAULT 'banner'"),
    ("entered_by", "text"),
    ("salt", "bytea"),
    ("identity", "bytea"),
    ("leaf", "bytea"),
    ("receipt", "bigint"),
)
# What the service's role may insert: every column but those the database fills in.
INSERTABLE = ", ".join(name for name, _ in COLUMNS if name != "seq")

# Serialises partition making (two replicas at once would both try to create the same month).
MONTHS_LOCK = 0x636F6E73656E7403

ADD_MONTHS = f"""
CREATE FUNCTION consent_events_add_months(p_from timestamptz, p_to timestamptz)
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
    PERFORM pg_advisory_xact_lock({MONTHS_LOCK});
    FOR month IN
        SELECT generate_series(date_trunc('month', p_from AT TIME ZONE 'UTC'),
                               date_trunc('month', p_to AT TIME ZONE 'UTC'), interval '1 month')
    LOOP
        name := 'consent_events_' || to_char(month, 'YYYY_MM');
        CONTINUE WHEN to_regclass(name) IS NOT NULL;
        EXECUTE format(
            'CREATE TABLE public.%I PARTITION OF public.consent_events'
            ' FOR VALUES FROM (%L) TO (%L)',
            name, month AT TIME ZONE 'UTC', (month + interval '1 month') AT TIME ZONE 'UTC');
        made := made + 1;
    END LOOP;
    RETURN made;
END;
$$
"""  # noqa: S608 (this file's constants)

# What `serve` calls every hour (core/periodic.py), as the service's role.
MONTHS_AHEAD = """
CREATE FUNCTION consent_events_months_ahead() RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    made integer := consent_events_add_months(now(), now() + interval '3 months');
BEGIN
    RETURN jsonb_build_object(
        'made', made, 'outside', (SELECT count(*) FROM consent_events_default));
END;
$$
"""

# An event leaving the table (an erasure, a purge) takes its id along.
FORGET_IDS = """
CREATE FUNCTION consent_event_ids_forget() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    DELETE FROM consent_event_ids i USING removed r WHERE i.event_id = r.event_id;
    RETURN NULL;
END;
$$
"""

# Once per statement (a purge deletes a month of ids at once).
IDS_GUARD = """
CREATE FUNCTION consent_event_ids_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('consent.erasure', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '% on consent_event_ids is not allowed: ids go only with their events',
        TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$
"""

# Hex digests (as the service computes them) to the stored bytes; NULL for anything else.
HEX_DIGESTS = """
CREATE FUNCTION consent_hex_digests(p_values text[]) RETURNS bytea[]
LANGUAGE sql IMMUTABLE STRICT
AS $$
    SELECT coalesce(array_agg(decode(v, 'hex')) FILTER (WHERE v ~ '^[0-9a-f]{64}$'), '{}')
    FROM unnest(p_values) v
$$
"""

# The erasure functions compared text hashes; they now compare bytes (migration 0008's text as
# 0012 left it, these lines changed).
# Each erasure names the months its events are in, so its delete (or anonymising update) opens
# those partitions only: by seq alone it would open every month's table and indexes, about
# 10 ms with thirty months.
TARGETS = "SELECT coalesce(array_agg(seq), '{}') INTO targets FROM consent_events"
TARGETS_AND_TIMES = (
    "SELECT coalesce(array_agg(seq), '{}'), coalesce(array_agg(recorded_at), '{}')"
    " INTO targets, times FROM consent_events"
)
DECLARE_TIMES = ("targets bigint[];", "targets bigint[];\n    times timestamptz[];")

# The erasure functions compared text hashes; they now compare bytes (migration 0008's text as
# 0012 left it, these lines changed).
ERASE_EDITS = {
    "consent_erase": (
        ("ip_hash = ANY (p_ip_hashes)", "ip_hash = ANY (consent_hex_digests(p_ip_hashes))"),
        ("user_hash = ANY (p_user_hashes)", "user_hash = ANY (consent_hex_digests(p_user_hashes))"),
        DECLARE_TIMES,  # first: each edit is a whole function the database checks
        (TARGETS, TARGETS_AND_TIMES),
        ("consent_erase_rows(p_mode, targets)", "consent_erase_rows(p_mode, targets, times)"),
    ),
    "consent_reapply_erasure": (
        ("ip_hash = ANY (p_values)", "ip_hash = ANY (consent_hex_digests(p_values))"),
        ("user_hash = ANY (p_values)", "user_hash = ANY (consent_hex_digests(p_values))"),
        DECLARE_TIMES,  # first: each edit is a whole function the database checks
        (TARGETS, TARGETS_AND_TIMES),
        (
            "consent_erase_rows(original.mode, targets)",
            "consent_erase_rows(original.mode, targets, times)",
        ),
    ),
}

# consent_erase_rows with the events' times, each statement planned for the values it is given
# (a one-shot plan): it opens those months' partitions only.
ROWS_IN_MONTHS = """
CREATE FUNCTION consent_erase_rows(p_mode text, p_targets bigint[], p_times timestamptz[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    touched integer;
BEGIN
    PERFORM set_config('consent.erasure', 'on', true);
    IF p_mode = 'delete' THEN
        EXECUTE 'DELETE FROM consent_events WHERE seq = ANY ($1) AND recorded_at = ANY ($2)'
        USING p_targets, p_times;
    ELSE
        EXECUTE 'UPDATE consent_events SET CLEARED, anonymised_at = now()'
                ' WHERE seq = ANY ($1) AND recorded_at = ANY ($2)'
        USING p_targets, p_times;
    END IF;
    GET DIAGNOSTICS touched = ROW_COUNT;
    PERFORM set_config('consent.erasure', 'off', true);
    RETURN touched;
END;
$$
"""
# Their statements are planned once per session (docs/retention.md, "Partitions").
GENERIC_PLANS = (
    "consent_erase(text, uuid, text[], text[], text, timestamptz, timestamptz, uuid, text, text,"
    " text, text, text, text, text[])",
    "consent_reapply_erasure(jsonb, text[], jsonb)",
)

EDIT_FUNCTION = """
DO $$
DECLARE
    body text := pg_get_functiondef('{name}'::regproc);
BEGIN
    IF position($o${old}$o$ IN body) = 0 THEN
        RAISE EXCEPTION 'migration 0014: {name} does not read as expected';
    END IF;
    EXECUTE replace(body, $o${old}$o$, $n${new}$n$);
END;
$$
"""


def _edit_functions(*, reverse: bool) -> None:
    if not reverse:
        cleared = ", ".join(f"{name} = NULL" for name in _migration("0011_ledger").IDENTIFYING)
        op.execute(ROWS_IN_MONTHS.replace("CLEARED", cleared))
        op.execute(
            "REVOKE ALL ON FUNCTION consent_erase_rows(text, bigint[], timestamptz[]) FROM PUBLIC"
        )
    for name, edits in ERASE_EDITS.items():
        for old, new in reversed(edits) if reverse else edits:
            if reverse:
                old, new = new, old
            op.execute(EDIT_FUNCTION.format(name=name, old=old, new=new))
    for function in GENERIC_PLANS:
        setting = "RESET plan_cache_mode" if reverse else "SET plan_cache_mode = force_generic_plan"
        op.execute(f"ALTER FUNCTION {function} {setting}")
    if reverse:
        op.execute("DROP FUNCTION consent_erase_rows(text, bigint[], timestamptz[])")


COPY = """
DO $$
DECLARE
    last_seq bigint;
    called boolean;
    first_month timestamptz;
    check_def record;
BEGIN
    EXECUTE format('SELECT last_value, is_called FROM %s',
                   pg_get_serial_sequence('consent_events_unpartitioned', 'seq'))
    INTO last_seq, called;
    -- The month of the first event stored: its partition and every later one are made.
    SELECT min(recorded_at) INTO first_month FROM consent_events_unpartitioned;
    PERFORM consent_events_add_months(coalesce(first_month, now()), now() + interval '3 months');
    -- The checks 0011 and 0012 wrote (their genesis seq is this database's own).
    FOR check_def IN
        SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
        WHERE conrelid = 'consent_events_unpartitioned'::regclass AND contype = 'c'
    LOOP
        EXECUTE format('ALTER TABLE consent_events ADD CONSTRAINT %I %s',
                       check_def.conname, check_def.def);
    END LOOP;
    INSERT INTO consent_events OVERRIDING SYSTEM VALUE
    SELECT {copied} FROM consent_events_unpartitioned;
    INSERT INTO consent_event_ids (event_id, recorded_at)
    SELECT event_id, recorded_at FROM consent_events_unpartitioned;
    PERFORM setval(pg_get_serial_sequence('consent_events', 'seq'), last_seq, called);
END;
$$
"""

# The new table's sequence took another name while the old one's existed.
RENAME_SEQUENCE = """
DO $$
BEGIN
    EXECUTE format('ALTER SEQUENCE %s RENAME TO consent_events_seq_seq',
                   pg_get_serial_sequence('consent_events', 'seq'));
END;
$$
"""

TRIGGERS = (
    "CREATE TRIGGER consent_events_append_only BEFORE DELETE OR UPDATE ON consent_events"
    " FOR EACH ROW EXECUTE FUNCTION consent_events_guard()",
    "CREATE TRIGGER consent_events_count_removed AFTER DELETE ON consent_events"
    " REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION consent_stats_count()",
    "CREATE TRIGGER consent_events_no_truncate BEFORE TRUNCATE ON consent_events"
    " FOR EACH STATEMENT EXECUTE FUNCTION consent_refuse_change()",
    "CREATE TRIGGER consent_events_tombstones AFTER DELETE ON consent_events"
    " REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION"
    " ledger_keep_tombstones()",
    "CREATE TRIGGER consent_events_forget_ids AFTER DELETE ON consent_events"
    " REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION"
    " consent_event_ids_forget()",
)

INDEXES = (
    "ALTER TABLE consent_events ADD CONSTRAINT pk_consent_events PRIMARY KEY (seq, recorded_at)",
    "CREATE INDEX ix_consent_events_subject ON consent_events (subject_id, seq)",
    "CREATE INDEX ix_consent_events_ip_hash ON consent_events (ip_hash, seq)"
    " WHERE ip_hash IS NOT NULL",
    "CREATE INDEX ix_consent_events_user_hash ON consent_events (user_hash, seq)"
    " WHERE user_hash IS NOT NULL",
    "CREATE INDEX ix_consent_events_recorded_at ON consent_events USING brin (recorded_at)"
    " WITH (autosummarize = on)",
    "ALTER TABLE consent_events ADD CONSTRAINT fk_consent_events_property_consent_schema_versions"
    " FOREIGN KEY (property, schema_version)"
    " REFERENCES consent_schema_versions (property, version)",
)


# The retention rules (migration 0013) now also say which partition each due event is in.
DUE_EDITS = (
    (
        "RETURNS TABLE (seq bigint, property text, rule text)",
        "RETURNS TABLE (seq bigint, property text, rule text, part oid)",
    ),
    (
        "SELECT e.seq, e.subject_id, e.property, e.event_type, e.recorded_at,",
        "SELECT e.seq, e.tableoid AS part, e.subject_id, e.property, e.event_type, e.recorded_at,",
    ),
    (
        "SELECT x.seq, x.property, CASE WHEN d.superseded THEN 'superseded' ELSE 'current' END",
        "SELECT x.seq, x.property,"
        " CASE WHEN d.superseded THEN 'superseded' ELSE 'current' END, x.part",
    ),
    (
        "SELECT e.seq, e.property, 'anonymised'",
        "SELECT e.seq, e.property, 'anonymised', e.tableoid",
    ),
)

# The purge (migration 0013's, which it replaces) now drops a month's partition whole when every
# event in it is due and the month is over: its leaves go to tombstones and its ids with it, as a
# delete would, without deleting row by row. What is due in other partitions is deleted.
PURGE_FUNCTION = """
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
    whole oid[] := '{}';
    part record;
    stored bigint;
    touched bigint := 0;
    dropped integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(PURGE_LOCK);
    -- The rules run once: the targets and their counts come from the same result.
    WITH due AS MATERIALIZED (SELECT * FROM consent_retention_due(p_as_of)),
    per_rule AS (SELECT due.property, due.rule, count(*) AS n FROM due GROUP BY 1, 2),
    per_property AS (
        SELECT per_rule.property, jsonb_object_agg(per_rule.rule, per_rule.n) AS rules
        FROM per_rule GROUP BY 1
    )
    SELECT (SELECT coalesce(array_agg(due.seq), '{}') FROM due),
           (SELECT coalesce(array_agg(due.part), '{}') FROM due),
           (SELECT coalesce(jsonb_object_agg(per_property.property, per_property.rules), '{}')
            FROM per_property)
    INTO targets, parts, counts;
    -- Whole months: ended (no insert can still land there), and every event in them due.
    FOR part IN
        SELECT t.part, count(*) AS due
        FROM unnest(parts) AS t(part)
        JOIN pg_class c ON c.oid = t.part
        WHERE c.relname ~ '^consent_events_[0-9]{4}_[0-9]{2}$'
          AND to_timestamp(substr(c.relname, 16), 'YYYY_MM') AT TIME ZONE 'UTC'
              + interval '1 month' <= now()
        GROUP BY t.part
    LOOP
        EXECUTE format('SELECT count(*) FROM %s', part.part::regclass) INTO stored;
        CONTINUE WHEN stored <> part.due;
        whole := whole || part.part;
    END LOOP;
    IF NOT p_dry_run THEN
        PERFORM set_config('consent.erasure_id', p_audit_id::text, true);
        PERFORM set_config('consent.retention', 'on', true);
        FOREACH part.part IN ARRAY whole LOOP
            PERFORM set_config('consent.erasure', 'on', true);
            EXECUTE format('INSERT INTO ledger_tombstones (seq, leaf, erasure)'
                           ' SELECT seq, leaf, $1 FROM %s WHERE leaf IS NOT NULL',
                           part.part::regclass) USING p_audit_id;
            EXECUTE format('DELETE FROM consent_event_ids i USING %s e'
                           ' WHERE i.event_id = e.event_id', part.part::regclass);
            EXECUTE format('DROP TABLE %s', part.part::regclass);
            PERFORM set_config('consent.erasure', 'off', true);
            dropped := dropped + 1;
        END LOOP;
        touched := (SELECT count(*) FROM unnest(parts) AS t(part) WHERE t.part = ANY (whole));
        -- The rest, a partition at a time: a delete naming the month's bounds reads that month
        -- only (by seq alone it would look in every month for every event).
        FOR part IN
            SELECT t.part, array_agg(t.seq) AS seqs,
                   regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                'FROM \\(''([^'']+)''\\) TO \\(''([^'']+)''\\)') AS bounds
            FROM unnest(targets, parts) AS t(seq, part)
            JOIN pg_class c ON c.oid = t.part
            WHERE t.part <> ALL (whole)
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
        'partitions_dropped', CASE WHEN p_dry_run THEN 0 ELSE cardinality(whole) END,
        'whole_partitions', cardinality(whole)
    );
END;
$$
""".replace("PURGE_LOCK", str(0x636F6E73656E7402))  # migration 0013's lock


def _migration(name: str) -> ModuleType:
    path = Path(__file__).with_name(f"2026_11_29_{name}.py")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _due_function(*, edited: bool) -> str:
    due = str(_migration("0013_retention").DUE_FUNCTION)
    if edited:
        for old, new in DUE_EDITS:
            assert due.count(old) == 1, old
            due = due.replace(old, new)
    return due


def _copied(name: str) -> str:
    return f"decode({name}, 'hex')" if name in HASHES else name


def upgrade() -> None:
    op.execute("LOCK TABLE consent_events IN ACCESS EXCLUSIVE MODE")
    op.execute("ALTER TABLE consent_events RENAME TO consent_events_unpartitioned")
    op.execute(
        "CREATE TABLE consent_event_ids ("
        " event_id uuid CONSTRAINT pk_consent_event_ids PRIMARY KEY,"
        " recorded_at timestamptz NOT NULL)"
    )
    columns = ", ".join(f"{name} {kind}" for name, kind in COLUMNS)
    checks = ", ".join(
        f"CONSTRAINT ck_consent_events_{name} CHECK (octet_length({name}) = 32)" for name in HASHES
    )
    op.execute(
        f"CREATE TABLE consent_events ({columns}, {checks}) PARTITION BY RANGE (recorded_at)"
    )
    op.execute("CREATE TABLE consent_events_default PARTITION OF consent_events DEFAULT")
    op.execute(ADD_MONTHS)
    op.execute(COPY.replace("{copied}", ", ".join(_copied(name) for name, _ in COLUMNS)))
    op.execute("DROP TABLE consent_events_unpartitioned")
    op.execute(RENAME_SEQUENCE)
    for statement in INDEXES:
        op.execute(statement)
    for statement in (IDS_GUARD, FORGET_IDS, HEX_DIGESTS, MONTHS_AHEAD, *TRIGGERS):
        op.execute(statement)
    for table in ("consent_event_ids",):
        op.execute(
            f"CREATE TRIGGER {table}_guard BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION consent_event_ids_guard()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION consent_refuse_change()"
        )
    _edit_functions(reverse=False)
    op.execute("DROP FUNCTION consent_retention_due(timestamptz)")
    op.execute(_due_function(edited=True))
    op.execute("REVOKE ALL ON FUNCTION consent_retention_due(timestamptz) FROM PUBLIC")
    op.execute(PURGE_FUNCTION)
    for function in (
        "consent_events_add_months(timestamptz, timestamptz)",
        "consent_events_months_ahead()",
        "consent_event_ids_forget()",
    ):
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION consent_events_months_ahead() TO consent_api")
    op.execute("GRANT SELECT ON consent_events TO consent_api")
    op.execute(f"GRANT INSERT ({INSERTABLE}) ON consent_events TO consent_api")
    op.execute("GRANT SELECT, INSERT ON consent_event_ids TO consent_api")
    # The copies have no statistics yet: plans would guess until autovacuum's next pass.
    op.execute("ANALYZE consent_events")
    op.execute("ANALYZE consent_event_ids")


def downgrade() -> None:
    op.execute("LOCK TABLE consent_events IN ACCESS EXCLUSIVE MODE")
    _edit_functions(reverse=True)
    op.execute(
        str(_migration("0013_retention").PURGE_FUNCTION).replace("CREATE ", "CREATE OR REPLACE ", 1)
    )
    op.execute("DROP FUNCTION consent_retention_due(timestamptz)")
    op.execute(_due_function(edited=False))
    op.execute("REVOKE ALL ON FUNCTION consent_retention_due(timestamptz) FROM PUBLIC")
    op.execute("DROP FUNCTION consent_events_months_ahead()")
    op.execute("ALTER TABLE consent_events RENAME TO consent_events_partitioned")
    legacy = ", ".join(
        f"{name} {'varchar(64)' if name in HASHES else kind}" for name, kind in COLUMNS
    )
    op.execute(f"CREATE TABLE consent_events ({legacy})")
    op.execute(
        """
        DO $$
        DECLARE
            last_seq bigint;
            called boolean;
            check_def record;
        BEGIN
            EXECUTE format('SELECT last_value, is_called FROM %s',
                           pg_get_serial_sequence('consent_events_partitioned', 'seq'))
            INTO last_seq, called;
            FOR check_def IN
                SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
                WHERE conrelid = 'consent_events_partitioned'::regclass AND contype = 'c'
                  AND conname NOT IN ('ck_consent_events_ip_hash', 'ck_consent_events_user_hash',
                                      'ck_consent_events_request_hash')
            LOOP
                EXECUTE format('ALTER TABLE consent_events ADD CONSTRAINT %I %s',
                               check_def.conname, check_def.def);
            END LOOP;
            INSERT INTO consent_events OVERRIDING SYSTEM VALUE
            SELECT {copied} FROM consent_events_partitioned;
            PERFORM setval(pg_get_serial_sequence('consent_events', 'seq'), last_seq, called);
        END;
        $$
        """.replace(
            "{copied}",
            ", ".join(f"encode({name}, 'hex')" if name in HASHES else name for name, _ in COLUMNS),
        )
    )
    op.execute("DROP TABLE consent_events_partitioned")
    op.execute(RENAME_SEQUENCE)
    op.execute("DROP FUNCTION consent_events_add_months(timestamptz, timestamptz)")
    op.execute("DROP TABLE consent_event_ids")
    op.execute("DROP FUNCTION consent_event_ids_forget()")
    op.execute("DROP FUNCTION consent_event_ids_guard()")
    op.execute("DROP FUNCTION consent_hex_digests(text[])")
    op.execute("ALTER TABLE consent_events ADD CONSTRAINT pk_consent_events PRIMARY KEY (seq)")
    op.execute(
        "ALTER TABLE consent_events ADD CONSTRAINT uq_consent_events_event_id UNIQUE (event_id)"
    )
    for statement in INDEXES[1:]:
        op.execute(statement)
    for statement in TRIGGERS[:-1]:
        op.execute(statement)
    op.execute("GRANT SELECT ON consent_events TO consent_api")
    op.execute(f"GRANT INSERT ({INSERTABLE}) ON consent_events TO consent_api")

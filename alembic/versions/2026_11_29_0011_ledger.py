"""A tamper-evident ledger: each event's leaf hash, tombstones that outlive erasure, chained seals

Every event stored from now on carries `salt` (16 random bytes), `identity` (a digest of its
identifying columns with the salt) and `leaf`, the RFC 9162 leaf hash of its canonical record
(docs/evidence.md). The service computes both; the
database refuses an event without a leaf. Events already stored stay outside the ledger: the
genesis seal (id 0) ends at the largest `seq` stored now.

- An anonymising erasure now also clears `salt`; `identity` and the leaf stay, so the leaf is
  still recomputed from what remains and the anonymised record stays protected.
- A deleting erasure (or any delete) leaves the event's leaf in `ledger_tombstones`: `seq` and
  leaf, nothing that identifies anyone. So the seals still verify.
- `ledger_seals`: each seal covers the events and tombstones with `seq` in (`first_seq`,
  `last_seq`], holds their Merkle root and hashes it together with the previous seal's hash. The
  service appends seals (a trigger checks each links to the last one); nobody may change or
  remove one.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The columns an anonymising erasure clears (ledger/event.py: IDENTIFYING_COLUMNS), now with salt.
IDENTIFYING = (
    "subject_id", "ip_hash", "user_hash", "hash_key_id", "user_agent", "page_url", "tcf_string",
    "gpp_string", "request_hash", "salt",
)  # fmt: skip
KEPT = ", ".join(f"'{c}'" for c in (*IDENTIFYING, "anonymised_at"))

GUARD_FUNCTION = f"""
CREATE OR REPLACE FUNCTION consent_events_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('consent.erasure', true), '') <> 'on' THEN
        RAISE EXCEPTION '% on consent_events is not allowed: events are append-only evidence',
            TG_OP USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    IF {" OR ".join(f"NEW.{c} IS NOT NULL" for c in IDENTIFYING)}
        OR NEW.anonymised_at IS NULL
        OR (to_jsonb(NEW) - ARRAY[{KEPT}]) IS DISTINCT FROM (to_jsonb(OLD) - ARRAY[{KEPT}])
    THEN
        RAISE EXCEPTION 'an anonymising erasure may only clear identifying columns'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$
"""

ERASE_ROWS_FUNCTION = f"""
CREATE OR REPLACE FUNCTION consent_erase_rows(p_mode text, p_targets bigint[]) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    touched integer;
BEGIN
    PERFORM set_config('consent.erasure', 'on', true);
    IF p_mode = 'delete' THEN
        DELETE FROM consent_events WHERE seq = ANY (p_targets);
    ELSE
        UPDATE consent_events
        SET {", ".join(f"{c} = NULL" for c in IDENTIFYING)}, anonymised_at = now()
        WHERE seq = ANY (p_targets);
    END IF;
    GET DIAGNOSTICS touched = ROW_COUNT;
    PERFORM set_config('consent.erasure', 'off', true);
    RETURN touched;
END;
$$
"""  # noqa: S608 (this file's constants)

TOMBSTONE_FUNCTION = """
CREATE FUNCTION ledger_keep_tombstones() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    INSERT INTO ledger_tombstones (seq, leaf)
    SELECT seq, leaf FROM removed WHERE leaf IS NOT NULL;
    RETURN NULL;
END;
$$
"""

# Seal n+1 starts where seal n ended and names its hash; ids leave no gap.
SEAL_LINK_FUNCTION = """
CREATE FUNCTION ledger_seal_links() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    last ledger_seals;
BEGIN
    SELECT * INTO last FROM ledger_seals ORDER BY id DESC LIMIT 1;
    IF last.id IS NULL THEN
        RETURN NEW;  -- the genesis seal
    END IF;
    IF NEW.id <> last.id + 1 OR NEW.first_seq <> last.last_seq OR NEW.last_seq < NEW.first_seq
        OR NEW.prev_hash <> last.seal_hash THEN
        RAISE EXCEPTION 'seal % does not extend seal % (first_seq %, prev_hash)', NEW.id,
            last.id, last.last_seq USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$
"""


def upgrade() -> None:
    op.execute(
        "ALTER TABLE consent_events ADD COLUMN salt bytea, ADD COLUMN identity bytea,"
        " ADD COLUMN leaf bytea"
    )
    op.execute(GUARD_FUNCTION)
    op.execute(ERASE_ROWS_FUNCTION)
    op.execute(
        """
        CREATE TABLE ledger_tombstones (
            seq bigint PRIMARY KEY,
            leaf bytea NOT NULL CHECK (octet_length(leaf) = 32),
            erased_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE ledger_seals (
            id bigint PRIMARY KEY CHECK (id >= 0),
            first_seq bigint NOT NULL,
            last_seq bigint NOT NULL,
            tree_size bigint NOT NULL CHECK (tree_size >= 0),
            root bytea NOT NULL CHECK (octet_length(root) = 32),
            prev_hash bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
            seal_hash bytea NOT NULL CHECK (octet_length(seal_hash) = 32),
            sealed_at timestamptz NOT NULL
        )
        """
    )
    # An export finds the seal of each of its events.
    op.execute("CREATE INDEX ix_ledger_seals_last_seq ON ledger_seals (last_seq)")
    op.execute(TOMBSTONE_FUNCTION)
    op.execute("REVOKE ALL ON FUNCTION ledger_keep_tombstones() FROM PUBLIC")
    op.execute(SEAL_LINK_FUNCTION)
    for table in ("ledger_tombstones", "ledger_seals"):
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION consent_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION consent_refuse_change()"
        )
    op.execute(
        "CREATE TRIGGER ledger_seals_link BEFORE INSERT ON ledger_seals"
        " FOR EACH ROW EXECUTE FUNCTION ledger_seal_links()"
    )
    op.execute("GRANT SELECT ON ledger_tombstones TO consent_api")
    op.execute("GRANT SELECT, INSERT ON ledger_seals TO consent_api")
    op.execute("GRANT INSERT (salt, identity, leaf) ON consent_events TO consent_api")

    # With writes held back: the genesis seal ends at the last event stored without a leaf, and
    # every later event must have one.
    op.execute("LOCK TABLE consent_events IN SHARE MODE")
    op.execute(
        """
        DO $$
        DECLARE
            genesis bigint := (SELECT coalesce(max(seq), 0) FROM consent_events);
            at timestamptz := date_trunc('milliseconds', now());
            empty bytea := sha256(''::bytea);
            zero bytea := decode(repeat('00', 32), 'hex');
        BEGIN
            EXECUTE format(
                'ALTER TABLE consent_events ADD CONSTRAINT ck_consent_events_leaf'
                ' CHECK (seq <= %s OR (octet_length(leaf) = 32 AND octet_length(identity) = 32))',
                genesis);
            ALTER TABLE consent_events ADD CONSTRAINT ck_consent_events_salt
                CHECK (salt IS NULL OR octet_length(salt) = 16);
            INSERT INTO ledger_seals (id, first_seq, last_seq, tree_size, root, prev_hash,
                                      seal_hash, sealed_at)
            VALUES (0, 0, genesis, 0, empty, zero,
                    sha256('\\x02'::bytea || zero || empty || int8send(0) || int8send(0)
                           || int8send(genesis) || int8send(0)
                           || int8send((extract(epoch FROM at) * 1000000)::bigint)),
                    at);
        END;
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER consent_events_tombstones
        AFTER DELETE ON consent_events REFERENCING OLD TABLE AS removed
        FOR EACH STATEMENT EXECUTE FUNCTION ledger_keep_tombstones()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER consent_events_tombstones ON consent_events")
    op.execute("DROP TABLE ledger_seals")
    op.execute("DROP TABLE ledger_tombstones")
    op.execute("DROP FUNCTION ledger_seal_links()")
    op.execute("DROP FUNCTION ledger_keep_tombstones()")
    op.execute("REVOKE INSERT (salt, identity, leaf) ON consent_events FROM consent_api")
    op.execute(
        "ALTER TABLE consent_events DROP COLUMN salt, DROP COLUMN identity, DROP COLUMN leaf"
    )
    # (0006's guard and 0008's erasing function, without salt.)
    op.execute(
        GUARD_FUNCTION.replace(', "salt"', "")
        .replace(" OR NEW.salt IS NOT NULL", "")
        .replace(", 'salt'", "")
    )
    op.execute(ERASE_ROWS_FUNCTION.replace(", salt = NULL", ""))

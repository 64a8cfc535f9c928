"""Erasures a restore can re-apply: each erasure's audit row keeps keyed tokens of what it matched

A backup taken before an erasure still holds the erased person's events. `consent_erase` now also
records in the audit row `erasure_tokens`: a keyed hash, under a label of its own, of each value
the erasure matched in the events (the subject id, or the stored IP or account hashes under every
key). A token equals nothing stored and keeps no field of any event, so the erasure stays
complete; with the key, a restore finds the same records in the restored copy and erases them
through `consent_reapply_erasure`, which only the owner may call (docs/backup.md).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ERASE_0005 = (
    "consent_erase(text, uuid, text[], text[], text, timestamptz, timestamptz, uuid, text, text,"
    " text, text, text, text)"
)
ERASE = ERASE_0005.replace("text, text)", "text, text, text[])")
REAPPLY = "consent_reapply_erasure(jsonb, text[], jsonb)"

# What both erasing functions do to the rows they picked: delete them, or clear every identifying
# column, inside the erasure path the append-only trigger allows. Not SECURITY DEFINER and not
# granted to anyone: only the owner's own functions can call it.
ERASE_ROWS_FUNCTION = """
CREATE FUNCTION consent_erase_rows(p_mode text, p_targets bigint[]) RETURNS integer
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
        SET subject_id = NULL, ip_hash = NULL, user_hash = NULL, hash_key_id = NULL,
            user_agent = NULL, page_url = NULL, tcf_string = NULL, gpp_string = NULL,
            request_hash = NULL, anonymised_at = now()
        WHERE seq = ANY (p_targets);
    END IF;
    GET DIAGNOSTICS touched = ROW_COUNT;
    PERFORM set_config('consent.erasure', 'off', true);
    RETURN touched;
END;
$$
"""
ERASE_ROWS = "consent_erase_rows(text, bigint[])"

# As in 0005, with the tokens (computed by the service, which holds the key) kept in the audit row.
ERASE_FUNCTION = """
CREATE FUNCTION consent_erase(
    p_mode text,
    p_subject_id uuid,
    p_ip_hashes text[],
    p_user_hashes text[],
    p_property text,
    p_since timestamptz,
    p_until timestamptz,
    p_audit_id uuid,
    p_actor text,
    p_identifier_type text,
    p_identifier_hash text,
    p_hash_key_id text,
    p_reference text,
    p_request_id text,
    p_tokens text[]
) RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    targets bigint[];
    touched integer;
BEGIN
    IF p_mode IS NULL OR p_mode NOT IN ('delete', 'anonymise') THEN
        RAISE EXCEPTION 'mode must be delete or anonymise' USING ERRCODE = '22023';
    END IF;
    IF num_nonnulls(p_subject_id, p_ip_hashes, p_user_hashes) <> 1 THEN
        RAISE EXCEPTION 'name exactly one identifier' USING ERRCODE = '22023';
    END IF;
    -- One statement per identifier kind (each can use its own index).
    IF p_subject_id IS NOT NULL THEN
        SELECT coalesce(array_agg(seq), '{}') INTO targets FROM consent_events
        WHERE subject_id = p_subject_id
          AND (p_property IS NULL OR property = p_property)
          AND (p_since IS NULL OR recorded_at >= p_since)
          AND (p_until IS NULL OR recorded_at < p_until);
    ELSIF p_ip_hashes IS NOT NULL THEN
        SELECT coalesce(array_agg(seq), '{}') INTO targets FROM consent_events
        WHERE ip_hash = ANY (p_ip_hashes)
          AND (p_property IS NULL OR property = p_property)
          AND (p_since IS NULL OR recorded_at >= p_since)
          AND (p_until IS NULL OR recorded_at < p_until);
    ELSE
        SELECT coalesce(array_agg(seq), '{}') INTO targets FROM consent_events
        WHERE user_hash = ANY (p_user_hashes)
          AND (p_property IS NULL OR property = p_property)
          AND (p_since IS NULL OR recorded_at >= p_since)
          AND (p_until IS NULL OR recorded_at < p_until);
    END IF;

    touched := consent_erase_rows(p_mode, targets);

    INSERT INTO dsr_audit (
        id, action, actor, identifier_type, identifier_hash, hash_key_id, property, since,
        until, mode, reference, matched, deleted, anonymised, request_id, erasure_tokens
    ) VALUES (
        p_audit_id, 'erasure', p_actor, p_identifier_type, p_identifier_hash, p_hash_key_id,
        p_property, p_since, p_until, p_mode, p_reference, touched,
        CASE WHEN p_mode = 'delete' THEN touched ELSE 0 END,
        CASE WHEN p_mode = 'anonymise' THEN touched ELSE 0 END,
        p_request_id, p_tokens
    );
    RETURN touched;
END;
$$
"""


def _erase_function_0005() -> str:
    """0005's function, for a downgrade: read from that migration, not written twice."""
    path = Path(__file__).with_name("2026_11_28_0005_least_privilege.py")
    spec = importlib.util.spec_from_file_location("migration_0005", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.ERASE_FUNCTION)


# Re-applies one erasure of another copy of this database to this one. The caller (holding the
# key) found the values whose tokens the audit row lists; this erases the events holding them
# within the erasure's property and time range, puts the original audit row back as it was, and
# audits the re-application as `erasure-reapplied` (reference: the original erasure's id). An
# erasure already here (the backup was taken after it) is left alone: returns NULL.
REAPPLY_FUNCTION = """
CREATE FUNCTION consent_reapply_erasure(p_audit jsonb, p_values text[], p_reapplied jsonb)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    original dsr_audit%ROWTYPE;
    targets bigint[];
    touched integer;
BEGIN
    original := jsonb_populate_record(NULL::dsr_audit, p_audit);
    IF original.action IS DISTINCT FROM 'erasure'
        OR original.mode IS NULL OR original.mode NOT IN ('delete', 'anonymise')
        OR original.identifier_type NOT IN ('subject_id', 'ip', 'user_id') THEN
        RAISE EXCEPTION 'not an erasure audit row' USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT 1 FROM dsr_audit WHERE id = original.id) THEN
        RETURN NULL;
    END IF;

    SELECT coalesce(array_agg(seq), '{}') INTO targets FROM consent_events
    WHERE CASE original.identifier_type
            WHEN 'subject_id' THEN subject_id::text = ANY (p_values)
            WHEN 'ip' THEN ip_hash = ANY (p_values)
            ELSE user_hash = ANY (p_values)
          END
      AND (original.property IS NULL OR property = original.property)
      AND (original.since IS NULL OR recorded_at >= original.since)
      AND (original.until IS NULL OR recorded_at < original.until);
    touched := consent_erase_rows(original.mode, targets);

    INSERT INTO dsr_audit (
        id, action, actor, identifier_type, identifier_hash, hash_key_id, property, since,
        until, mode, reference, matched, deleted, anonymised, request_id, created_at,
        erasure_tokens
    ) VALUES (
        original.id, original.action, original.actor, original.identifier_type,
        original.identifier_hash, original.hash_key_id, original.property, original.since,
        original.until, original.mode, original.reference, original.matched, original.deleted,
        original.anonymised, original.request_id, original.created_at, original.erasure_tokens
    );
    INSERT INTO dsr_audit (
        id, action, actor, identifier_type, identifier_hash, hash_key_id, property, since,
        until, mode, reference, matched, deleted, anonymised, request_id
    ) VALUES (
        (p_reapplied->>'id')::uuid, 'erasure-reapplied', p_reapplied->>'actor',
        original.identifier_type, original.identifier_hash, original.hash_key_id,
        original.property, original.since, original.until, original.mode, original.id::text,
        touched,
        CASE WHEN original.mode = 'delete' THEN touched ELSE 0 END,
        CASE WHEN original.mode = 'anonymise' THEN touched ELSE 0 END,
        NULL
    );
    RETURN touched;
END;
$$
"""


def upgrade() -> None:
    op.add_column("dsr_audit", sa.Column("erasure_tokens", ARRAY(sa.Text()), nullable=True))
    op.execute(f"DROP FUNCTION {ERASE_0005}")
    op.execute(ERASE_ROWS_FUNCTION)
    op.execute(f"REVOKE ALL ON FUNCTION {ERASE_ROWS} FROM PUBLIC")
    op.execute(ERASE_FUNCTION)
    op.execute(f"REVOKE ALL ON FUNCTION {ERASE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {ERASE} TO consent_api")
    op.execute(REAPPLY_FUNCTION)
    op.execute(f"REVOKE ALL ON FUNCTION {REAPPLY} FROM PUBLIC")  # the owner's alone


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {REAPPLY}")
    op.execute(f"DROP FUNCTION {ERASE}")
    op.execute(f"DROP FUNCTION {ERASE_ROWS}")
    op.execute(_erase_function_0005())
    op.execute(f"REVOKE ALL ON FUNCTION {ERASE_0005} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {ERASE_0005} TO consent_api")
    op.drop_column("dsr_audit", "erasure_tokens")

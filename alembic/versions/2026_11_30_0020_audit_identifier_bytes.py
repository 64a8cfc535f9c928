"""An audit row's identifier hash is stored as its 32 bytes, as the events' hashes are

`dsr_audit.identifier_hash` held the keyed hash as 64 hex characters; the events' hashes have been
stored as their 32 bytes since migration 0014. It is now `bytea`, with a CHECK that it is 32 bytes
(NULL still for a retention purge, which names no one). Nothing outside the table changes: the
API, the console and the DSR journal still show it as hex (`DsrAuditRow` maps it with
`HexDigest`), so a journal written before this revision restores as it did.

- Existing rows convert with `decode(identifier_hash, 'hex')`. Each was written by this service,
  a SHA-256 digest in lower-case hex; a row that is not (written by hand) stops the migration with
  its count, and nothing changes: converting it would change what the evidence says.
- `ALTER TABLE … TYPE` rewrites the table without firing row triggers, so `dsr_audit_immutable`
  stays enabled throughout, as it did for 0008's and 0013's changes to this table: nothing
  disables it, and the table keeps its grants (`consent_api`: SELECT, INSERT). The rewrite holds
  an ACCESS EXCLUSIVE lock on `dsr_audit` while it runs (DSR requests wait; banner events do
  not). Measured on PostgreSQL 15 over 1,000,000 audit rows made with `generate_series`, on a
  shared 2-core machine: the upgrade took 3.6 to 4.8 s, the downgrade 3.3 to 3.9 s.
- `consent_erase` takes the hash as hex, as before (the service's call is unchanged), and stores
  its bytes. `consent_reapply_erasure` takes the journal's audit row, whose hash is hex, and puts
  back its bytes. The retention purge writes NULL: unchanged.

The downgrade converts back with `encode(identifier_hash, 'hex')` and restores both functions.

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-30
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECK = "ck_dsr_audit_identifier_hash"

# A row this service did not write stops the migration: converting it would change what the
# evidence says. Over the million rows above this check took 0.4 s (a regular expression, 9 s).
NOT_DIGESTS = """
DO $$
DECLARE
    bad bigint;
BEGIN
    BEGIN
        -- Upper-case digits would come back in lower case; decode() refuses a non-hex digit.
        SELECT count(*) INTO bad FROM dsr_audit
        WHERE octet_length(identifier_hash) <> 64
           OR encode(decode(identifier_hash, 'hex'), 'hex') <> identifier_hash;
    EXCEPTION WHEN invalid_parameter_value THEN
        bad := NULL;
    END;
    IF bad IS DISTINCT FROM 0 THEN
        RAISE EXCEPTION 'migration 0020: % dsr_audit row(s) hold an identifier_hash that is not a'
                        ' SHA-256 digest in lower-case hex', coalesce(bad::text, 'some')
            USING HINT = 'This service writes no such row. Find them with "SELECT seq FROM'
                         ' dsr_audit WHERE identifier_hash !~ ''^[0-9a-f]{64}$''".';
    END IF;
END;
$$
"""

# The functions as 0015 (consent_erase) and 0014 (consent_reapply_erasure) left them, these lines
# changed: the hash arrives as hex and is stored as its bytes.
EDITS = {
    "consent_erase": (
        (
            "p_audit_id, 'erasure', p_actor, p_identifier_type, p_identifier_hash, p_hash_key_id,",
            "p_audit_id, 'erasure', p_actor, p_identifier_type,"
            " decode(p_identifier_hash, 'hex'), p_hash_key_id,",
        ),
    ),
    "consent_reapply_erasure": (
        (
            "original := jsonb_populate_record(NULL::dsr_audit, p_audit);",
            "original := jsonb_populate_record(NULL::dsr_audit, p_audit - 'identifier_hash');\n"
            "    -- The journal shows the hash in hex, as the API does (migration 0020).\n"
            "    original.identifier_hash := decode(p_audit->>'identifier_hash', 'hex');",
        ),
    ),
}


def _edit_function_template() -> str:
    """0014's in-place edit of a function (the database's own text, one passage replaced; its
    grants and settings kept), read from that migration rather than written twice."""
    path = Path(__file__).with_name("2026_11_29_0014_partitions.py")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.EDIT_FUNCTION).replace("migration 0014", "migration 0020")


def _edit_functions(*, reverse: bool) -> None:
    template = _edit_function_template()
    for name, edits in EDITS.items():
        for old, new in edits:
            if reverse:
                old, new = new, old
            op.execute(template.format(name=name, old=old, new=new))


def upgrade() -> None:
    op.execute(NOT_DIGESTS)
    op.execute(
        "ALTER TABLE dsr_audit"
        " ALTER COLUMN identifier_hash TYPE bytea USING decode(identifier_hash, 'hex'),"
        f" ADD CONSTRAINT {CHECK} CHECK (octet_length(identifier_hash) = 32)"
    )
    _edit_functions(reverse=False)


def downgrade() -> None:
    _edit_functions(reverse=True)
    op.execute(
        f"ALTER TABLE dsr_audit DROP CONSTRAINT {CHECK},"
        " ALTER COLUMN identifier_hash TYPE varchar(64) USING encode(identifier_hash, 'hex')"
    )

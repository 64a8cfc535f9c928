"""Receipts kept with their events; every tombstone names the audited erasure that made it

- `ledger_receipts`: the signed receipt of each group commit (its compact JWS) and the leaves its
  tree holds, in the tree's order. The writer inserts it in the same statement as the batch's
  events, and each event names it in `consent_events.receipt`: an event's receipt is committed
  with the event, and an export or a retry gets the receipt the browser got (docs/evidence.md,
  "Receipts"). Nobody may change or remove one.
- `ledger_tombstones.erasure`: the `dsr_audit` id of the erasure that deleted the event. The
  erasure functions name it (`consent.erasure_id`) before they delete; a delete that names none is
  refused, so removing an event without an audit row means bypassing the triggers, and then the
  tombstone is missing and the seal no longer verifies. `ledger verify` checks each erasure's
  tombstones against its audit row's count. Tombstones made before this migration name none.
- The check that every event after the genesis seal has a leaf and an identity now holds for
  NULL too (0011's passed a NULL leaf: a CHECK that evaluates to NULL passes).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TOMBSTONE_FUNCTION = """
CREATE OR REPLACE FUNCTION ledger_keep_tombstones() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    erasure uuid := nullif(current_setting('consent.erasure_id', true), '')::uuid;
BEGIN
    IF erasure IS NULL AND EXISTS (SELECT 1 FROM removed WHERE leaf IS NOT NULL) THEN
        RAISE EXCEPTION 'events leave the ledger only through an audited erasure'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO ledger_tombstones (seq, leaf, erasure)
    SELECT seq, leaf, erasure FROM removed WHERE leaf IS NOT NULL;
    RETURN NULL;
END;
$$
"""

ERASE_CALL = "touched := consent_erase_rows("
M0008 = "2026_11_28_0008_erasure_journal.py"
M0011 = "2026_11_29_0011_ledger.py"


def _migration(name: str) -> ModuleType:
    """An earlier migration's functions, changed here by one line each rather than written
    twice."""
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _naming(function: str, erasure_id: str) -> str:
    """`function` (0008's text) replaced in place, setting `consent.erasure_id` before it
    deletes."""
    assert function.count(ERASE_CALL) == 1
    named = f"PERFORM set_config('consent.erasure_id', {erasure_id}, true);\n    {ERASE_CALL}"
    return function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1).replace(
        ERASE_CALL, named
    )


# 0011's check let an event through without a leaf: octet_length(NULL) is NULL, and a CHECK that
# is NULL passes. Every event after the genesis seal must carry both (verify names one that does
# not, but the database now refuses it first).
LEAF_CHECK = """
DO $$
DECLARE
    genesis bigint := (SELECT last_seq FROM ledger_seals WHERE id = 0);
BEGIN
    ALTER TABLE consent_events DROP CONSTRAINT ck_consent_events_leaf;
    EXECUTE format(
        'ALTER TABLE consent_events ADD CONSTRAINT ck_consent_events_leaf CHECK (seq <= %s OR '
        '%s)', genesis, '{condition}');
END;
$$
"""
REQUIRED = "(octet_length(leaf) = 32 AND octet_length(identity) = 32)"


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE ledger_receipts (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            signed_at timestamptz NOT NULL DEFAULT now(),
            jws text NOT NULL,
            leaves bytea NOT NULL
                CHECK (octet_length(leaves) > 0 AND octet_length(leaves) % 32 = 0)
        )
        """
    )
    op.execute(
        "CREATE TRIGGER ledger_receipts_append_only BEFORE UPDATE OR DELETE ON ledger_receipts"
        " FOR EACH ROW EXECUTE FUNCTION consent_refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER ledger_receipts_no_truncate BEFORE TRUNCATE ON ledger_receipts"
        " FOR EACH STATEMENT EXECUTE FUNCTION consent_refuse_change()"
    )
    op.execute("GRANT SELECT, INSERT (jws, leaves) ON ledger_receipts TO consent_api")
    op.execute("ALTER TABLE consent_events ADD COLUMN receipt bigint")
    op.execute("GRANT INSERT (receipt) ON consent_events TO consent_api")

    op.execute("ALTER TABLE ledger_tombstones ADD COLUMN erasure uuid")
    op.execute(TOMBSTONE_FUNCTION)
    op.execute(LEAF_CHECK.format(condition=f"coalesce({REQUIRED}, false)"))
    m0008 = _migration(M0008)
    op.execute(_naming(m0008.ERASE_FUNCTION, "p_audit_id::text"))
    op.execute(_naming(m0008.REAPPLY_FUNCTION, "p_reapplied->>'id'"))


def downgrade() -> None:
    op.execute(LEAF_CHECK.format(condition=REQUIRED))
    m0008 = _migration(M0008)
    op.execute(m0008.ERASE_FUNCTION.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    op.execute(m0008.REAPPLY_FUNCTION.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    m0011 = _migration(M0011)
    op.execute(m0011.TOMBSTONE_FUNCTION.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
    op.execute("ALTER TABLE ledger_tombstones DROP COLUMN erasure")
    op.execute("REVOKE INSERT (receipt) ON consent_events FROM consent_api")
    op.execute("ALTER TABLE consent_events DROP COLUMN receipt")
    op.execute("DROP TABLE ledger_receipts")

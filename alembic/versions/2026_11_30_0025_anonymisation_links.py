"""Every anonymised event names the audited erasure that anonymised it

A deleting erasure leaves each event's leaf in `ledger_tombstones`, naming its erasure (0012),
and `ledger verify` checks the tombstones against the audit trail. An anonymised event keeps its
row, its identifying columns emptied, and nothing tied it to an erasure: an owner who turned on
`consent.erasure` and emptied an event's columns by hand passed `verify` (a review of
2026-11-30), the decision still counted and gone from the person's history and export.

- `ledger_anonymisations`: the `seq` of each anonymised event and the `dsr_audit` id of the
  erasure that anonymised it. Append-only, like the tombstones; the service's role reads it.
- `consent_events_anonymisations` (AFTER UPDATE, for each row whose `anonymised_at` is set where
  it was not, on every partition): the update must run under an erasure (`consent.erasure_id`,
  which every erasure function sets before it erases), and the event is recorded with that
  erasure. An anonymisation outside an erasure is refused, through the parent or on a partition;
  one made around the trigger leaves an anonymised event with no record, which `verify` names.
- Events anonymised before this migration are recorded with no erasure; `verify` counts them.

Revision ID: 0025
Revises: 0024
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECORD_FUNCTION = """
CREATE FUNCTION ledger_keep_anonymisations() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    erasure uuid := nullif(current_setting('consent.erasure_id', true), '')::uuid;
BEGIN
    IF erasure IS NULL THEN
        RAISE EXCEPTION 'events are anonymised only through an audited erasure'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO ledger_anonymisations (seq, erasure) VALUES (NEW.seq, erasure);
    RETURN NULL;
END;
$$
"""


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE ledger_anonymisations (
            seq bigint PRIMARY KEY,
            erasure uuid,
            anonymised_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # What was anonymised before: no erasure to name.
    op.execute(
        "INSERT INTO ledger_anonymisations (seq, erasure, anonymised_at)"
        " SELECT seq, NULL, anonymised_at FROM consent_events WHERE anonymised_at IS NOT NULL"
    )
    op.execute(
        "CREATE TRIGGER ledger_anonymisations_append_only BEFORE UPDATE OR DELETE"
        " ON ledger_anonymisations FOR EACH ROW EXECUTE FUNCTION consent_refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER ledger_anonymisations_no_truncate BEFORE TRUNCATE"
        " ON ledger_anonymisations FOR EACH STATEMENT EXECUTE FUNCTION consent_refuse_change()"
    )
    op.execute("GRANT SELECT ON ledger_anonymisations TO consent_api")
    op.execute(RECORD_FUNCTION)
    op.execute("REVOKE ALL ON FUNCTION ledger_keep_anonymisations() FROM PUBLIC")
    # For each row: a row trigger on the partitioned table is cloned to every partition, now
    # and later, so an update made on a month's partition directly is held too (a statement
    # trigger with transition tables would fire only for updates made through the parent).
    op.execute(
        """
        CREATE TRIGGER consent_events_anonymisations
        AFTER UPDATE ON consent_events
        FOR EACH ROW
        WHEN (OLD.anonymised_at IS NULL AND NEW.anonymised_at IS NOT NULL)
        EXECUTE FUNCTION ledger_keep_anonymisations()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER consent_events_anonymisations ON consent_events")
    op.execute("DROP FUNCTION ledger_keep_anonymisations()")
    op.execute("DROP TABLE ledger_anonymisations")

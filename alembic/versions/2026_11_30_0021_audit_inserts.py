"""The service's role writes only its own audit rows: the columns it fills, the actions it takes

Since 0005 `consent_api` held INSERT on every column of `dsr_audit`, so the service's own role
could write any row: an `erasure`, `erasure-reapplied` or `retention-purge` that never happened
(a forged erasure's tokens would even be re-applied by `backup reapply`), under any actor, with
any counts and a back-dated `created_at`. Those rows are written only by the owner's functions:
`consent_erase` (0005, 0008, 0015, 0020), `consent_reapply_erasure` (0008, which `backup
reapply` runs as the owner) and the retention purge (0013, 0014: `retention purge` as the owner,
or `consent_retention_purge_due`, SECURITY DEFINER, from the service).

- `consent_api` may insert only the columns `record_audit` (service/dsr/service.py) fills, for
  look-ups, exports and withdrawals: never `seq`, `created_at` or `erasure_tokens`.
- `dsr_audit_writer` (BEFORE INSERT) refuses any role that does not hold the table owner's
  privileges (`pg_has_role … USAGE`: the owner, a superuser, a member of the owner) a row whose
  action is not one the service writes itself, and stamps `created_at` with `now()`. Inside the
  SECURITY DEFINER functions `current_user` is their owner, the table's, so they pass; so does a
  restore run as the owner, which puts journal rows back with their own `created_at`. A role
  holding the owner's privileges could drop the trigger anyway, so the trigger leaves it alone.

The downgrade drops the trigger and its function and gives back INSERT on the whole table.

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What `record_audit` writes (history, export and the withdrawals' rows).
INSERTABLE = (
    "id, action, actor, identifier_type, identifier_hash, hash_key_id, property, since, until,"
    " mode, reference, matched, deleted, anonymised, request_id"
)

# The actions the service writes as itself (`DsrAction` less the owner's three).
WRITER_FUNCTION = """
CREATE FUNCTION dsr_audit_writer() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
BEGIN
    IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE')
    THEN
        RETURN NEW;
    END IF;
    IF NEW.action IN ('erasure', 'erasure-reapplied', 'retention-purge') THEN
        RAISE EXCEPTION '% audit rows are written only by the database''s own functions'
                        ' (consent_erase, consent_reapply_erasure, the retention purge)',
            NEW.action USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.action NOT IN (
        'history', 'export', 'withdrawal', 'withdrawal-replayed', 'withdrawal-reentered'
    ) THEN
        RAISE EXCEPTION '"%" is not an action the service audits', NEW.action
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    NEW.created_at := now();
    RETURN NEW;
END;
$$
"""


def upgrade() -> None:
    op.execute(WRITER_FUNCTION)
    op.execute("REVOKE ALL ON FUNCTION dsr_audit_writer() FROM PUBLIC")
    op.execute(
        "CREATE TRIGGER dsr_audit_writer BEFORE INSERT ON dsr_audit"
        " FOR EACH ROW EXECUTE FUNCTION dsr_audit_writer()"
    )
    # Revoking INSERT on the table revokes it on each column too; then the columns above alone.
    op.execute("REVOKE INSERT ON dsr_audit FROM consent_api")
    op.execute(f"GRANT INSERT ({INSERTABLE}) ON dsr_audit TO consent_api")


def downgrade() -> None:
    op.execute("REVOKE INSERT ON dsr_audit FROM consent_api")
    op.execute("GRANT INSERT ON dsr_audit TO consent_api")
    op.execute("DROP TRIGGER dsr_audit_writer ON dsr_audit")
    op.execute("DROP FUNCTION dsr_audit_writer()")

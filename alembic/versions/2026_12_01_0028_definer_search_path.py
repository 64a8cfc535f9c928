"""Functions that run as their owner look in `pg_temp` last

Every `SECURITY DEFINER` function in the schema (the writer's `consent_record_events`, the
erasure, the statistics, the retention functions, the ledger's triggers) ran with
`search_path = pg_catalog, public`. PostgreSQL searches the session's temporary schema before
everything not naming it, so a table name in such a function found a temporary table of the
same name first. A review of 2026-12-01, connected as the service's role (which may create
temporary tables, as every role may by default), stored an event dated 2019 on a version that
does not exist: a temporary `consent_event_time_window` of 100 years and a temporary
`consent_schema_versions` answered the function's checks; a temporary `consent_event_ids` let an
event id be stored twice.

Each of them now runs with `search_path = pg_catalog, public, pg_temp`, as PostgreSQL's manual
advises for `SECURITY DEFINER` ("Writing SECURITY DEFINER Functions Safely"): a temporary table
can no longer stand in for one of the schema's. `tests/ledger/test_least_privilege.py` checks
every such function at head, and repeats the review's attack.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVERY_DEFINER_FUNCTION = """
DO $$
DECLARE
    definer regprocedure;
BEGIN
    FOR definer IN
        SELECT p.oid::regprocedure FROM pg_proc AS p
        WHERE p.prosecdef AND p.pronamespace = 'public'::regnamespace
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = {path}', definer);
    END LOOP;
END;
$$
"""


def upgrade() -> None:
    op.execute(EVERY_DEFINER_FUNCTION.format(path="pg_catalog, public, pg_temp"))


def downgrade() -> None:
    op.execute(EVERY_DEFINER_FUNCTION.format(path="pg_catalog, public"))

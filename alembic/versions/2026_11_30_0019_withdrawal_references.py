"""A written withdrawal's reference is its idempotency key: an index to find it by

`POST /v1/dsr/withdrawals` and `consent-service dsr withdraw` now look up the withdrawals already
recorded under the request's `reference` for its identifier before recording one: a retry of the
same request answers the first and records nothing again; the same reference and identifier with
another property filter is a `409` (docs/policies.md, "Retries"). Each look-up runs under a
transaction-scoped advisory lock on the reference, so two identical requests at once record once.

This index makes the look-up one index probe instead of a scan of the whole audit trail, which
every DSR look-up and export adds a row to. Measured on PostgreSQL 15 over 1,000,000 audit rows
made with `generate_series` (1 in 100 a withdrawal): the look-up took 143 ms without it (a
parallel sequential scan, while holding the lock) and 0.03 ms with it; building it took 0.3 s and
blocks writes to `dsr_audit` (not to events) meanwhile. It is partial (withdrawals only: the
other actions' references are not keys, and an erasure's reference never blocks a withdrawal) and
not unique:
- the rule spans key rotations: a row keeps its identifier's hash under the key current when it
  was written, so a unique index over (reference, identifier hash) would hold per key only, and
  the look-up hashes the identifier under every configured key instead;
- withdrawals the defect recorded twice before this revision stay as they are: audit rows are
  immutable evidence (`dsr_audit_immutable`) and a unique index could not be built over them; a
  retry of such a request answers the first of them;
- under the lock a concurrent second request waits and then answers the first one's result
  (`200`), where a unique violation would have to be caught and the request run again.

No grant changes: the look-up reads `dsr_audit` and a retry writes its own audit row
(`withdrawal-replayed`), both of which `consent_api` could already do (migration 0005); advisory
locks need no privilege.

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_dsr_audit_withdrawal_reference"


def upgrade() -> None:
    op.execute(f"CREATE INDEX {INDEX} ON dsr_audit (reference) WHERE action = 'withdrawal'")


def downgrade() -> None:
    op.execute(f"DROP INDEX {INDEX}")

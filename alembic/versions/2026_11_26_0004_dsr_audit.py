"""DSR audit trail (append-only)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dsr_audit",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("identifier_type", sa.Text(), nullable=False),
        sa.Column("identifier_hash", sa.String(length=64), nullable=False),
        sa.Column("hash_key_id", sa.String(length=32), nullable=False),
        sa.Column("property", sa.Text(), nullable=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("mode", sa.Text(), nullable=True),
        sa.Column("reference", sa.Text(), nullable=True),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Integer(), nullable=False),
        sa.Column("anonymised", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_dsr_audit")),
        sa.UniqueConstraint("id", name=op.f("uq_dsr_audit_id")),
    )
    # The audit trail is what shows who looked at whose data: nobody may rewrite it.
    op.execute(
        """
        CREATE TRIGGER dsr_audit_immutable
        BEFORE UPDATE OR DELETE ON dsr_audit
        FOR EACH ROW EXECUTE FUNCTION consent_refuse_change()
        """
    )
    op.execute(
        """
        CREATE TRIGGER dsr_audit_no_truncate
        BEFORE TRUNCATE ON dsr_audit
        FOR EACH STATEMENT EXECUTE FUNCTION consent_refuse_change()
        """
    )


def downgrade() -> None:
    op.drop_table("dsr_audit")

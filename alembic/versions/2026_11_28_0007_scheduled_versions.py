"""Versions that take effect later: `effective_at` on a version, the one pending version of a
property, and cancellations (insert-only) of a pending version before it takes effect

A version whose `effective_at` is NULL took effect when it was published (every version before
this migration). Versions stay immutable: cancelling one adds a row to
`consent_schema_cancellations` and clears the property's pending pointer (docs/policies.md,
"Material changes announced ahead").

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "consent_schema_versions",
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column("consent_properties", sa.Column("pending_version", sa.Integer(), nullable=True))
    op.create_table(
        "consent_schema_cancellations",
        sa.Column("property", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "cancelled_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("cancelled_by", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("property", "version"),
        sa.ForeignKeyConstraint(
            ["property", "version"],
            ["consent_schema_versions.property", "consent_schema_versions.version"],
        ),
    )
    op.execute(
        """
        CREATE TRIGGER consent_schema_cancellations_immutable
        BEFORE UPDATE OR DELETE ON consent_schema_cancellations
        FOR EACH ROW EXECUTE FUNCTION consent_refuse_change()
        """
    )
    op.execute("GRANT SELECT, INSERT ON consent_schema_cancellations TO consent_api")


def downgrade() -> None:
    op.drop_table("consent_schema_cancellations")
    op.drop_column("consent_properties", "pending_version")
    op.drop_column("consent_schema_versions", "effective_at")

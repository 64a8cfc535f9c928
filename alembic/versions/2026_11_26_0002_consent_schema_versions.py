"""Consent properties and immutable consent schema versions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consent_properties",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("last_material_version", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_consent_properties")),
    )
    op.create_table(
        "consent_schema_versions",
        sa.Column("property", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("material", sa.Boolean(), nullable=False),
        sa.Column("last_material_version", sa.Integer(), nullable=False),
        sa.Column(
            "published_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("published_by", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "last_material_version BETWEEN 1 AND version",
            name=op.f("ck_consent_schema_versions_last_material_not_after_version"),
        ),
        sa.CheckConstraint(
            "NOT material OR last_material_version = version",
            name=op.f("ck_consent_schema_versions_material_is_own"),
        ),
        sa.CheckConstraint(
            "version >= 1", name=op.f("ck_consent_schema_versions_version_positive")
        ),
        sa.ForeignKeyConstraint(
            ["property"],
            ["consent_properties.name"],
            name=op.f("fk_consent_schema_versions_property_consent_properties"),
        ),
        sa.PrimaryKeyConstraint("property", "version", name=op.f("pk_consent_schema_versions")),
    )
    # Evidence must not change after the fact: a record proves what was shown only if the version
    # it points to can never be edited or removed, whoever holds the database credentials.
    op.execute(
        """
        CREATE FUNCTION consent_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% on % is not allowed: rows are immutable evidence',
                TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END;
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER consent_schema_versions_immutable
        BEFORE UPDATE OR DELETE ON consent_schema_versions
        FOR EACH ROW EXECUTE FUNCTION consent_refuse_change()
        """
    )
    op.execute(
        """
        CREATE TRIGGER consent_schema_versions_no_truncate
        BEFORE TRUNCATE ON consent_schema_versions
        FOR EACH STATEMENT EXECUTE FUNCTION consent_refuse_change()
        """
    )


def downgrade() -> None:
    op.drop_table("consent_schema_versions")
    op.drop_table("consent_properties")
    op.execute("DROP FUNCTION consent_refuse_change()")

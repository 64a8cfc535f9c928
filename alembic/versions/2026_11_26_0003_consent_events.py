"""Consent events: the append-only evidence store

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consent_events",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("property", sa.Text(), nullable=False),
        sa.Column("subject_id", sa.UUID(), nullable=True),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("choices", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("effective", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("gpc", sa.Boolean(), nullable=False),
        sa.Column("dnt", sa.Boolean(), nullable=False),
        sa.Column("signals_applied", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("ip_hash", sa.String(length=64), nullable=True),
        sa.Column("user_hash", sa.String(length=64), nullable=True),
        sa.Column("hash_key_id", sa.String(length=32), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("page_url", sa.Text(), nullable=True),
        sa.Column("tcf_string", sa.Text(), nullable=True),
        sa.Column("gpp_string", sa.Text(), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("anonymised_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "event_type IN ('accept-all', 'reject-all', 'save-selection', 'withdraw', 're-prompt')",
            name=op.f("ck_consent_events_known_event_type"),
        ),
        sa.ForeignKeyConstraint(
            ["property", "schema_version"],
            ["consent_schema_versions.property", "consent_schema_versions.version"],
            name=op.f("fk_consent_events_property_consent_schema_versions"),
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_consent_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_consent_events_event_id")),
    )
    op.create_index(
        "ix_consent_events_ip_hash",
        "consent_events",
        ["ip_hash", "seq"],
        unique=False,
        postgresql_where=sa.text("ip_hash IS NOT NULL"),
    )
    op.create_index(
        "ix_consent_events_subject", "consent_events", ["subject_id", "seq"], unique=False
    )
    op.create_index(
        "ix_consent_events_user_hash",
        "consent_events",
        ["user_hash", "seq"],
        unique=False,
        postgresql_where=sa.text("user_hash IS NOT NULL"),
    )
    op.execute(GUARD_FUNCTION)
    op.execute(
        """
        CREATE TRIGGER consent_events_append_only
        BEFORE UPDATE OR DELETE ON consent_events
        FOR EACH ROW EXECUTE FUNCTION consent_events_guard()
        """
    )
    op.execute(
        """
        CREATE TRIGGER consent_events_no_truncate
        BEFORE TRUNCATE ON consent_events
        FOR EACH STATEMENT EXECUTE FUNCTION consent_refuse_change()
        """
    )


# Events are evidence: nobody edits or removes them, except the erasure path, which marks its own
# transaction (SET LOCAL consent.erasure = 'on') and may then delete rows, or clear (never change)
# the columns that identify a person.
GUARD_FUNCTION = """
CREATE FUNCTION consent_events_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('consent.erasure', true), '') <> 'on' THEN
        RAISE EXCEPTION '% on consent_events is not allowed: events are append-only evidence',
            TG_OP USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    IF NEW.subject_id IS NOT NULL OR NEW.ip_hash IS NOT NULL OR NEW.user_hash IS NOT NULL
        OR NEW.hash_key_id IS NOT NULL OR NEW.user_agent IS NOT NULL OR NEW.page_url IS NOT NULL
        OR NEW.tcf_string IS NOT NULL OR NEW.gpp_string IS NOT NULL
        OR NEW.request_hash IS NOT NULL OR NEW.anonymised_at IS NULL
        OR (NEW.seq, NEW.event_id, NEW.property, NEW.event_type, NEW.schema_version, NEW.choices,
            NEW.effective, NEW.gpc, NEW.dnt, NEW.signals_applied, NEW.recorded_at)
           IS DISTINCT FROM
           (OLD.seq, OLD.event_id, OLD.property, OLD.event_type, OLD.schema_version, OLD.choices,
            OLD.effective, OLD.gpc, OLD.dnt, OLD.signals_applied, OLD.recorded_at)
    THEN
        RAISE EXCEPTION 'an anonymising erasure may only clear identifying columns'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$
"""


def downgrade() -> None:
    op.drop_index(
        "ix_consent_events_user_hash",
        table_name="consent_events",
        postgresql_where=sa.text("user_hash IS NOT NULL"),
    )
    op.drop_index("ix_consent_events_subject", table_name="consent_events")
    op.drop_index(
        "ix_consent_events_ip_hash",
        table_name="consent_events",
        postgresql_where=sa.text("ip_hash IS NOT NULL"),
    )
    op.drop_table("consent_events")
    op.execute("DROP FUNCTION consent_events_guard()")

"""Who made an event: the banner (a click), a browser signal (GPC/DNT recorded as a decision), or
the DSR team (a withdrawal sent in writing), and for the DSR team which key or the CLI

`source` is part of the record; `entered_by` names the API key id (or `cli`) of a DSR entry and
is empty otherwise. The append-only guard is rewritten to compare every column that is not
identifying, whatever columns later migrations add (docs/guarantees.md, "Erasure is complete").

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The columns an anonymising erasure clears (ledger/event.py: IDENTIFYING_COLUMNS); every other
# column must stay as it was.
IDENTIFYING = (
    "subject_id", "ip_hash", "user_hash", "hash_key_id", "user_agent", "page_url", "tcf_string",
    "gpp_string", "request_hash",
)  # fmt: skip

GUARD_FUNCTION = f"""
CREATE OR REPLACE FUNCTION consent_events_guard() RETURNS trigger LANGUAGE plpgsql AS $$
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
        OR (to_jsonb(NEW) - ARRAY[{", ".join(f"'{c}'" for c in (*IDENTIFYING, "anonymised_at"))}])
           IS DISTINCT FROM
           (to_jsonb(OLD) - ARRAY[{", ".join(f"'{c}'" for c in (*IDENTIFYING, "anonymised_at"))}])
    THEN
        RAISE EXCEPTION 'an anonymising erasure may only clear identifying columns'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$
"""


def upgrade() -> None:
    op.add_column(
        "consent_events",
        sa.Column("source", sa.Text(), nullable=False, server_default="banner"),
    )
    op.add_column("consent_events", sa.Column("entered_by", sa.Text(), nullable=True))
    op.create_check_constraint(
        "known_source", "consent_events", "source IN ('banner', 'signal', 'dsr')"
    )
    op.create_check_constraint(
        "dsr_entries_name_their_actor",
        "consent_events",
        "(source = 'dsr') = (entered_by IS NOT NULL)",
    )
    op.execute(GUARD_FUNCTION)


def downgrade() -> None:
    op.drop_constraint("dsr_entries_name_their_actor", "consent_events")
    op.drop_constraint("known_source", "consent_events")
    op.drop_column("consent_events", "entered_by")
    op.drop_column("consent_events", "source")

"""Least privilege: role consent_api, the grants it needs, and erasure through one audited function

The API logs in as a member of `consent_api` and owns nothing, so PostgreSQL itself refuses to let
it alter tables, disable the append-only triggers, change `session_replication_role`, or change
evidence. The one exception, erasure, goes through `consent_erase`, a SECURITY DEFINER function
owned by the migrating role: it erases and writes the audit row together, or does neither
(docs/guarantees.md, "Least privilege").

Roles belong to the whole server, not to one database: `consent_api` is created only if it does
not exist, and never dropped, so several databases (and test templates) on one server share it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE_ROLE = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'consent_api') THEN
        CREATE ROLE consent_api NOLOGIN;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE EXCEPTION 'the role running the migration may not create roles'
        USING HINT = 'Ask a superuser to run "CREATE ROLE consent_api NOLOGIN;" once on this '
                     'server (or grant CREATEROLE), then migrate again.';
END
$$
"""

GRANTS = (
    "GRANT USAGE ON SCHEMA public TO consent_api",
    "GRANT SELECT, INSERT ON consent_events, consent_schema_versions, dsr_audit TO consent_api",
    # Publishing moves a property's pointer to its newest version.
    "GRANT SELECT, INSERT, UPDATE ON consent_properties TO consent_api",
    "GRANT SELECT, INSERT ON api_keys TO consent_api",
    "GRANT UPDATE (last_used_at, revoked_at) ON api_keys TO consent_api",
    "GRANT SELECT ON alembic_version TO consent_api",  # readiness
)

# One statement per identifier kind picks the rows (each can use its own index); then they are
# deleted, or their identifying columns cleared, and the audit row written, in one transaction.
ERASE_FUNCTION = """
CREATE FUNCTION consent_erase(
    p_mode text,
    p_subject_id uuid,
    p_ip_hashes text[],
    p_user_hashes text[],
    p_property text,
    p_since timestamptz,
    p_until timestamptz,
    p_audit_id uuid,
    p_actor text,
    p_identifier_type text,
    p_identifier_hash text,
    p_hash_key_id text,
    p_reference text,
    p_request_id text
) RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    targets bigint[];
    touched integer;
BEGIN
    IF p_mode IS NULL OR p_mode NOT IN ('delete', 'anonymise') THEN
        RAISE EXCEPTION 'mode must be delete or anonymise' USING ERRCODE = '22023';
    END IF;
    IF num_nonnulls(p_subject_id, p_ip_hashes, p_user_hashes) <> 1 THEN
        RAISE EXCEPTION 'name exactly one identifier' USING ERRCODE = '22023';
    END IF;
    IF p_subject_id IS NOT NULL THEN
        SELECT coalesce(array_agg(seq), '{}') INTO targets FROM consent_events
        WHERE subject_id = p_subject_id
          AND (p_property IS NULL OR property = p_property)
          AND (p_since IS NULL OR recorded_at >= p_since)
          AND (p_until IS NULL OR recorded_at < p_until);
    ELSIF p_ip_hashes IS NOT NULL THEN
        SELECT coalesce(array_agg(seq), '{}') INTO targets FROM consent_events
        WHERE ip_hash = ANY (p_ip_hashes)
          AND (p_property IS NULL OR property = p_property)
          AND (p_since IS NULL OR recorded_at >= p_since)
          AND (p_until IS NULL OR recorded_at < p_until);
    ELSE
        SELECT coalesce(array_agg(seq), '{}') INTO targets FROM consent_events
        WHERE user_hash = ANY (p_user_hashes)
          AND (p_property IS NULL OR property = p_property)
          AND (p_since IS NULL OR recorded_at >= p_since)
          AND (p_until IS NULL OR recorded_at < p_until);
    END IF;

    PERFORM set_config('consent.erasure', 'on', true);
    IF p_mode = 'delete' THEN
        DELETE FROM consent_events WHERE seq = ANY (targets);
    ELSE
        UPDATE consent_events
        SET subject_id = NULL, ip_hash = NULL, user_hash = NULL, hash_key_id = NULL,
            user_agent = NULL, page_url = NULL, tcf_string = NULL, gpp_string = NULL,
            request_hash = NULL, anonymised_at = now()
        WHERE seq = ANY (targets);
    END IF;
    GET DIAGNOSTICS touched = ROW_COUNT;
    PERFORM set_config('consent.erasure', 'off', true);

    INSERT INTO dsr_audit (
        id, action, actor, identifier_type, identifier_hash, hash_key_id, property, since,
        until, mode, reference, matched, deleted, anonymised, request_id
    ) VALUES (
        p_audit_id, 'erasure', p_actor, p_identifier_type, p_identifier_hash, p_hash_key_id,
        p_property, p_since, p_until, p_mode, p_reference, touched,
        CASE WHEN p_mode = 'delete' THEN touched ELSE 0 END,
        CASE WHEN p_mode = 'anonymise' THEN touched ELSE 0 END,
        p_request_id
    );
    RETURN touched;
END;
$$
"""


def upgrade() -> None:
    op.execute(CREATE_ROLE)
    for grant in GRANTS:
        op.execute(grant)
    op.execute(ERASE_FUNCTION)
    op.execute(
        "REVOKE ALL ON FUNCTION consent_erase(text, uuid, text[], text[], text, timestamptz,"
        " timestamptz, uuid, text, text, text, text, text, text) FROM PUBLIC"
    )
    op.execute(
        "GRANT EXECUTE ON FUNCTION consent_erase(text, uuid, text[], text[], text, timestamptz,"
        " timestamptz, uuid, text, text, text, text, text, text) TO consent_api"
    )


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION consent_erase(text, uuid, text[], text[], text, timestamptz,"
        " timestamptz, uuid, text, text, text, text, text, text)"
    )
    op.execute(
        """
        REVOKE ALL ON consent_events, consent_schema_versions, dsr_audit, consent_properties,
            api_keys, alembic_version FROM consent_api
        """
    )

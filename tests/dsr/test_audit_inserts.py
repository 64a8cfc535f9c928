"""Migration 0021: the service's role inserts only the audit columns it fills and the actions it
takes; the owner (its functions, a restore) writes any row, as before (docs/guarantees.md, "Least
privilege")."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from alembic import command
from sqlalchemy.engine import make_url

from service.core.migrations import alembic_config
from tests.conftest import database_at

TABLE_GRANTS = (
    "SELECT array_agg(privilege_type::text ORDER BY privilege_type)"
    " FROM information_schema.role_table_grants"
    " WHERE grantee = 'consent_api' AND table_name = 'dsr_audit'"
)
INSERT_COLUMNS = (
    "SELECT array_agg(column_name::text ORDER BY column_name)"
    " FROM information_schema.column_privileges WHERE grantee = 'consent_api'"
    " AND table_name = 'dsr_audit' AND privilege_type = 'INSERT'"
)
TRIGGERS = (
    "SELECT array_agg(tgname || ':' || tgenabled::text ORDER BY tgname) FROM pg_trigger"
    " WHERE tgrelid = 'dsr_audit'::regclass"
)
ROW = (
    "INSERT INTO dsr_audit (id, action, actor, identifier_type, identifier_hash, hash_key_id,"
    " matched, deleted, anonymised{columns}) VALUES (gen_random_uuid(), $1, 'cli', 'subject_id',"
    " sha256(''), 'k1', 1, 1, 0{values}) RETURNING created_at"
)
WRITTEN = ROW.format(columns="", values="")
BACK_DATED = ROW.format(columns=", created_at", values=", '2020-01-01T00:00:00Z'")
# What `record_audit` fills (service/dsr/service.py).
OWN_COLUMNS = sorted(
    [
        "id", "action", "actor", "identifier_type", "identifier_hash", "hash_key_id", "property",
        "since", "until", "mode", "reference", "matched", "deleted", "anonymised", "request_id",
    ]
)  # fmt: skip
EVERY_COLUMN = sorted([*OWN_COLUMNS, "seq", "created_at", "erasure_tokens"])


async def test_migration_0021_narrows_the_roles_audit_inserts_and_the_downgrade_restores_them(
    server_url: str, api_role: str
) -> None:
    async with database_at(server_url, "0020") as owner_url:
        api_url = make_url(owner_url).set(username=api_role, password=None).render_as_string()
        db = await asyncpg.connect(owner_url)
        try:
            triggers = await db.fetchval(TRIGGERS)
            assert await db.fetchval(TABLE_GRANTS) == ["INSERT", "SELECT"]
            assert await db.fetchval(INSERT_COLUMNS) == EVERY_COLUMN
            config = alembic_config(owner_url)

            await asyncio.to_thread(command.upgrade, config, "0021")
            assert await db.fetchval(TABLE_GRANTS) == ["SELECT"]
            assert await db.fetchval(INSERT_COLUMNS) == OWN_COLUMNS
            assert await db.fetchval(TRIGGERS) == sorted([*triggers, "dsr_audit_writer:O"])
            service = await asyncpg.connect(api_url)
            try:
                await service.fetchval(WRITTEN, "history")
                with pytest.raises(
                    asyncpg.InsufficientPrivilegeError,
                    match="erasure audit rows are written only by the database's own functions",
                ):
                    await service.fetchval(WRITTEN, "erasure")
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                    await service.fetchval(BACK_DATED, "history")
            finally:
                await service.close()
            # The owner (a restore putting a journal's rows back) writes any of them, as it was.
            assert str(await db.fetchval(BACK_DATED, "erasure")).startswith("2020-01-01")

            await asyncio.to_thread(command.downgrade, config, "0020")
            assert await db.fetchval(TABLE_GRANTS) == ["INSERT", "SELECT"]
            assert await db.fetchval(INSERT_COLUMNS) == EVERY_COLUMN
            assert await db.fetchval(TRIGGERS) == triggers
            assert await db.fetchval("SELECT to_regproc('dsr_audit_writer')") is None
        finally:
            await db.close()

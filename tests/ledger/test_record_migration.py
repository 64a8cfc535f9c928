"""Migrations of the writer's function on a database with events in it. 0016: the written
withdrawals the DSR team entered before it (stored straight into consent_events, their ids never
registered) get their ids in consent_event_ids, so afterwards every stored event's id is there.
0018: the foreign key on the schema version gives way to the function's check, and comes back."""

from __future__ import annotations

import asyncio

import asyncpg
from alembic import command

from service.core.migrations import alembic_config
from tests.conftest import database_at
from tests.factories import example, published

# Ten events as 0015's writer stored them (ids registered), and two withdrawals as 0015's DSR
# path stored them (not registered).
EVENTS = """
WITH rows AS (
    SELECT gen_random_uuid() AS event_id, now() - make_interval(days => i) AS recorded_at, i
    FROM generate_series(1, 12) AS i
), ids AS (
    INSERT INTO consent_event_ids (event_id, recorded_at)
    SELECT event_id, recorded_at FROM rows WHERE i <= 10
)
INSERT INTO consent_events (event_id, property, subject_id, event_type, schema_version, choices,
    effective, gpc, dnt, signals_applied, request_hash, recorded_at, source, entered_by, identity,
    leaf)
SELECT event_id, 'itsailor', gen_random_uuid(), CASE WHEN i <= 10 THEN 'accept-all' ELSE
    'withdraw' END, 1, '{"necessary": true}', '{"necessary": true}', false, false, '[]',
    sha256(('request' || i)::bytea), recorded_at, CASE WHEN i <= 10 THEN 'banner' ELSE 'dsr' END,
    CASE WHEN i > 10 THEN 'key-1' END, sha256(('identity' || i)::bytea),
    sha256(('leaf' || i)::bytea)
FROM rows
"""
UNREGISTERED = (
    "SELECT count(*) FROM consent_events e"
    " WHERE NOT EXISTS (SELECT 1 FROM consent_event_ids i WHERE i.event_id = e.event_id)"
)


async def test_the_migration_registers_the_ids_of_earlier_written_withdrawals(
    server_url: str,
) -> None:
    async with database_at(server_url, "0015") as owner_url:
        await published(owner_url, example("itsailor"))
        db = await asyncpg.connect(owner_url)
        try:
            await db.execute(EVENTS)
            assert await db.fetchval(UNREGISTERED) == 2

            await asyncio.to_thread(command.upgrade, alembic_config(owner_url), "0016")

            assert await db.fetchval(UNREGISTERED) == 0
            assert await db.fetchval("SELECT count(*) FROM consent_event_ids") == 12
        finally:
            await db.close()


FOREIGN_KEYS = "SELECT count(*) FROM pg_constraint WHERE conname = $1 AND contype = 'f'"
CHECKS_VERSIONS = (
    "SELECT pg_get_functiondef('consent_record_events(jsonb, text, bytea)'::regprocedure)"
    " LIKE '%is not published%'"
)


async def test_0018_trades_the_foreign_key_for_the_functions_check_and_back(
    server_url: str,
) -> None:
    """Upgraded, no row-by-row foreign key remains (on the table or any partition) and the
    function checks the versions; downgraded, the foreign key is back and validated against the
    stored events, and the function is 0016's again, its grants kept."""
    name = "fk_consent_events_property_consent_schema_versions"
    async with database_at(server_url, "0017") as owner_url:
        await published(owner_url, example("itsailor"))
        db = await asyncpg.connect(owner_url)
        try:
            await db.execute(EVENTS)
            assert await db.fetchval(FOREIGN_KEYS, name) > 1  # the table's and its partitions'
            config = alembic_config(owner_url)

            await asyncio.to_thread(command.upgrade, config, "0018")
            assert await db.fetchval(FOREIGN_KEYS, name) == 0
            assert await db.fetchval(CHECKS_VERSIONS)

            await asyncio.to_thread(command.downgrade, config, "0017")
            assert await db.fetchval(FOREIGN_KEYS, name) > 1
            assert not await db.fetchval(CHECKS_VERSIONS)
            assert await db.fetchval(
                "SELECT has_function_privilege('consent_api',"
                " 'consent_record_events(jsonb, text, bytea)', 'EXECUTE')"
            )
        finally:
            await db.close()


async def test_0022_adds_the_decisions_signals_and_takes_them_back(server_url: str) -> None:
    """The latest-decision function returns each decision's gpc and dnt from 0022 on; downgraded,
    it is 0017's again, callable by the service's role either way."""
    columns = (
        "SELECT array_agg(name ORDER BY ordinality) FROM pg_proc,"
        " unnest(proargnames) WITH ORDINALITY AS a(name, ordinality)"
        " WHERE proname = 'consent_latest_decisions'"
    )
    callable_by_the_service = (
        "SELECT has_function_privilege('consent_api',"
        " 'consent_latest_decisions(uuid[], text[])', 'EXECUTE')"
    )
    async with database_at(server_url, "0021") as owner_url:
        db = await asyncpg.connect(owner_url)
        try:
            config = alembic_config(owner_url)
            await asyncio.to_thread(command.upgrade, config, "0022")
            assert (await db.fetchval(columns))[-2:] == ["gpc", "dnt"]
            assert await db.fetchval(callable_by_the_service)
            await asyncio.to_thread(command.downgrade, config, "0021")
            assert (await db.fetchval(columns))[-1] == "recorded_at"
            assert await db.fetchval(callable_by_the_service)
        finally:
            await db.close()


async def test_0027_reads_rows_by_position_and_its_downgrade_restores_0024s_function(
    server_url: str,
) -> None:
    """Upgraded, the function reads each row by position; downgraded, it is 0024's again, text
    for text, and the service's role may still call it (and only call it)."""
    definition = (
        "SELECT pg_get_functiondef('consent_record_events(jsonb, text, bytea)'::regprocedure)"
    )
    callable_by_the_service = (
        "SELECT has_function_privilege('consent_api',"
        " 'consent_record_events(jsonb, text, bytea)', 'EXECUTE')"
    )
    async with database_at(server_url, "0026") as owner_url:
        db = await asyncpg.connect(owner_url)
        try:
            before = await db.fetchval(definition)
            config = alembic_config(owner_url)
            await asyncio.to_thread(command.upgrade, config, "0027")
            upgraded = await db.fetchval(definition)
            assert "jsonb_array_elements(batch)" in upgraded
            assert await db.fetchval(callable_by_the_service)
            # Its helper is the owner's alone.
            assert not await db.fetchval(
                "SELECT has_function_privilege('consent_api',"
                " 'consent_one_event_per_id(bigint, bigint)', 'EXECUTE')"
            )
            await asyncio.to_thread(command.downgrade, config, "0026")
            assert await db.fetchval(definition) == before
            assert await db.fetchval(callable_by_the_service)
            assert await db.fetchval("SELECT to_regproc('consent_one_event_per_id') IS NULL")
        finally:
            await db.close()


async def test_0028_puts_pg_temp_last_in_every_definers_path_and_takes_it_out(
    server_url: str,
) -> None:
    """Only the search path changes: the functions' other settings (a plan cache mode, a lock
    timeout) stay as they were, both ways."""
    settings = (
        "SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc AS p"
        " WHERE p.prosecdef AND p.pronamespace = 'public'::regnamespace ORDER BY 1"
    )
    async with database_at(server_url, "0027") as owner_url:
        db = await asyncpg.connect(owner_url)
        try:
            before = [tuple(row) for row in await db.fetch(settings)]
            assert all("search_path=pg_catalog, public" in config for _, config in before)
            config = alembic_config(owner_url)
            await asyncio.to_thread(command.upgrade, config, "0028")
            after = [tuple(row) for row in await db.fetch(settings)]
            assert after == [
                (
                    name,
                    [
                        "search_path=pg_catalog, public, pg_temp"
                        if setting.startswith("search_path=")
                        else setting
                        for setting in config_
                    ],
                )
                for name, config_ in before
            ]
            await asyncio.to_thread(command.downgrade, config, "0027")
            assert [tuple(row) for row in await db.fetch(settings)] == before
        finally:
            await db.close()

"""Migration 0016 on a database with events in it: the written withdrawals the DSR team entered
before it (stored straight into consent_events, their ids never registered) get their ids in
consent_event_ids, so afterwards every stored event's id is there."""

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

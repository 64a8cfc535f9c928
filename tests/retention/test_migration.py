"""Migration 0014 on a database with events in it: every row kept (its digests as the same bytes),
each in its month's partition, every id in consent_event_ids, the sequence continued, and DSR
history by subject and by IP the same as before."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import httpx
from alembic import command
from sqlalchemy import make_url

from service.app import create_app
from service.core.hashing import hasher_from_settings
from service.core.migrations import alembic_config
from tests.conftest import database_at, make_settings
from tests.factories import api_key, bearer, example, published

COLUMNS = (
    "seq, event_id, property, subject_id, event_type, schema_version, choices, effective, gpc,"
    " dnt, signals_applied, hash_key_id, user_agent, page_url, recorded_at, source, salt,"
    " identity, leaf"
)
# Thirty months of events, 4 a month, three subjects, one IP among them.
LOAD = """
INSERT INTO consent_events (event_id, property, subject_id, event_type, schema_version, choices,
    effective, gpc, dnt, signals_applied, ip_hash, user_hash, hash_key_id, user_agent,
    request_hash, recorded_at, salt, identity, leaf)
SELECT gen_random_uuid(), 'itsailor', ($1::uuid[])[1 + i % 3],
    (ARRAY['accept-all', 'reject-all', 'withdraw', 're-prompt'])[1 + i % 4], 1,
    '{"necessary": true}', '{"necessary": true}', i % 2 = 0, false, '[]',
    CASE WHEN i % 5 = 0 THEN $2 ELSE encode(sha256(('ip' || i)::bytea), 'hex') END,
    CASE WHEN i % 3 = 0 THEN encode(sha256(('user' || i)::bytea), 'hex') END,
    'k1', 'ua', encode(sha256(('request' || i)::bytea), 'hex'),
    now() - make_interval(days => i * 7),
    substring(sha256(('salt' || i)::bytea) FROM 1 FOR 16), sha256(('identity' || i)::bytea),
    sha256(('leaf' || i)::bytea)
FROM generate_series(0, 129) AS i
"""
SNAPSHOT = f"SELECT {COLUMNS}, {{hashes}} FROM consent_events ORDER BY seq"
AS_TEXT = "ip_hash, user_hash, request_hash"
AS_BYTES = (
    "encode(ip_hash, 'hex') AS ip_hash, encode(user_hash, 'hex') AS user_hash,"
    " encode(request_hash, 'hex') AS request_hash"
)


async def test_the_migration_keeps_every_event_and_its_history(
    server_url: str, api_role: str, tmp_path: Path
) -> None:
    async with database_at(server_url, "0013") as owner_url:
        await published(owner_url, example("itsailor"))
        service_url = make_url(owner_url).set(username=api_role).render_as_string()
        hasher = hasher_from_settings(make_settings(service_url, tmp_path))
        address = "198.51.100.7"
        subjects = [uuid.uuid4() for _ in range(3)]
        db = await asyncpg.connect(owner_url)
        try:
            await db.execute(LOAD, subjects, hasher.ip(address))
            before = [dict(r) for r in await db.fetch(SNAPSHOT.format(hashes=AS_TEXT))]
            last_seq = await db.fetchval("SELECT last_value FROM consent_events_seq_seq")

            await asyncio.to_thread(command.upgrade, alembic_config(owner_url), "head")

            after = [dict(r) for r in await db.fetch(SNAPSHOT.format(hashes=AS_BYTES))]
            assert after == before
            assert (
                await db.fetchval(
                    "SELECT count(*) FROM consent_event_ids i JOIN consent_events e"
                    " USING (event_id, recorded_at)"
                )
                == len(before)
                == 130
            )
            assert await db.fetchval("SELECT count(*) FROM consent_events_default") == 0
            months = await db.fetchval("SELECT count(DISTINCT tableoid) FROM consent_events")
            assert months >= 29
            assert await db.fetchval("SELECT last_value FROM consent_events_seq_seq") == last_seq
        finally:
            await db.close()

        app = create_app(make_settings(service_url, tmp_path))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                reader = bearer(await api_key(owner_url, "dsr:read"))
                for query, expected, count in (
                    (
                        {"subject_id": str(subjects[1])},
                        [r for r in before if r["subject_id"] == subjects[1]],
                        43,
                    ),
                    (
                        {"ip": address},
                        [r for r in before if r["ip_hash"] == hasher.ip(address)],
                        26,
                    ),
                ):
                    response = await client.post(
                        "/v1/dsr/history", json={**query, "limit": 100}, headers=reader
                    )
                    assert response.status_code == 200, response.text
                    items = response.json()["items"]
                    assert [i["event_id"] for i in items] == [str(r["event_id"]) for r in expected]
                    assert len(items) == count


FUNCTIONS = (
    "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.proacl::text"
    " FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace"
    " AND (p.proname LIKE 'consent_retention%' OR p.proname LIKE 'consent_events_%') ORDER BY 1"
)


async def test_migration_0023_downgrade_restores_the_functions_exactly(server_url: str) -> None:
    async with database_at(server_url, "0022") as owner_url:
        db = await asyncpg.connect(owner_url)
        try:
            before = [tuple(row) for row in await db.fetch(FUNCTIONS)]
            config = alembic_config(owner_url)
            await asyncio.to_thread(command.upgrade, config, "0023")
            assert [tuple(row) for row in await db.fetch(FUNCTIONS)] != before
            await asyncio.to_thread(command.downgrade, config, "0022")
            assert [tuple(row) for row in await db.fetch(FUNCTIONS)] == before
        finally:
            await db.close()

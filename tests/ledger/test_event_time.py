"""The database holds the service's own role to what publishing and ingest do (migration 0024):
an event's time is the database's, within `consent_event_time_window.tolerance`; a property's
version pointers move only forward, to published versions, with their own lineage
(docs/guarantees.md, "Least privilege").

The test databases open the time window for the tests' hand-moved clocks (tests/conftest.py);
each test here closes it again to the migration's 5 minutes.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from alembic import command

from service.app import utc_now
from service.core.migrations import alembic_config
from service.core.pipeline import ConsentAPI
from service.ledger.writer import RECORD_SQL, batch_json
from service.state import of as services
from tests.conftest import database_at
from tests.factories import Clock, event, example, published
from tests.ledger.test_definition import new_event

ITSAILOR = "/v1/properties/itsailor"
STORED = "SELECT count(*) FROM consent_events"


@pytest.fixture
async def service_role(
    db_url: str, owner_url: str, client: httpx.AsyncClient
) -> AsyncIterator[asyncpg.Connection]:
    """The service's role (db_url), itsailor published, the window as migrated."""
    await published(db_url, example("itsailor"))
    owner = await asyncpg.connect(owner_url)
    try:
        await owner.execute("UPDATE consent_event_time_window SET tolerance = interval '5 minutes'")
    finally:
        await owner.close()
    connection = await asyncpg.connect(db_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.mark.parametrize(
    "offset",
    [timedelta(days=-2000), timedelta(minutes=-6), timedelta(minutes=6), timedelta(days=365)],
)
async def test_an_event_dated_away_from_the_database_s_time_is_refused(
    service_role: asyncpg.Connection, offset: timedelta
) -> None:
    """What a review did as the service's role: a back-dated accept-all, its leaf recomputable
    (attach_leaf needs no secret). The batch is refused whole, before anything is stored."""
    on_time = new_event(recorded_at=datetime.now(UTC))
    dated = new_event(recorded_at=datetime.now(UTC) + offset)
    with pytest.raises(asyncpg.PostgresError) as refused:
        await service_role.fetch(RECORD_SQL, batch_json([on_time, dated]), None, None)
    assert refused.value.sqlstate == "CR001"
    assert await service_role.fetchval(STORED) == 0
    stored = await service_role.fetch(RECORD_SQL, batch_json([on_time]), None, None)
    assert [row["event_id"] for row in stored] == [on_time.event_id]


async def test_only_the_owner_sets_the_window(service_role: asyncpg.Connection) -> None:
    for statement in (
        "UPDATE consent_event_time_window SET tolerance = interval '100 years'",
        "DELETE FROM consent_event_time_window",
        "SELECT tolerance FROM consent_event_time_window",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await service_role.execute(statement)


async def test_a_service_clock_apart_from_the_database_s_is_a_503_and_an_operator_s_log_line(
    service_role: asyncpg.Connection,
    client: httpx.AsyncClient,
    app: ConsentAPI,
    captured_logs: io.StringIO,
) -> None:
    services(app).clock = Clock(utc_now() - timedelta(hours=1))
    answer = await client.post(f"{ITSAILOR}/consent-events", json=event())
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["detail"] == (
        "the service's clock and the database's disagree; nothing was stored, retry later"
    )
    assert "Retry-After" in answer.headers
    assert "event_time_refused" in captured_logs.getvalue()
    assert await service_role.fetchval(STORED) == 0
    services(app).clock = utc_now
    again = await client.post(f"{ITSAILOR}/consent-events", json=event())
    assert again.status_code == 201, again.text


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("UPDATE consent_properties SET current_version = 99", "is not published"),
        ("UPDATE consent_properties SET current_version = 1, last_material_version = 0",
         "is not published with last material version 0"),
        ("UPDATE consent_properties SET pending_version = 1", "a pending version"),
        ("UPDATE consent_properties SET pending_version = 7", "a pending version"),
        ("UPDATE consent_properties SET name = 'elsewhere'", "name and creation time"),
        ("INSERT INTO consent_properties (name, current_version, last_material_version)"
         " VALUES ('other', 1, 1)", "starts with no version"),
    ],
)  # fmt: skip
async def test_the_service_role_moves_no_pointer_where_publishing_would_not(
    service_role: asyncpg.Connection, statement: str, message: str
) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match=message):
        await service_role.execute(statement)


async def test_a_pointer_moves_only_forward_and_a_version_keeps_its_lineage(
    service_role: asyncpg.Connection, db_url: str
) -> None:
    """Version 2 (material) published through the service; back to 1 is refused, as is a third
    version that names version 1 as its last material one (a material change asked nobody)."""
    document = example("itsailor")
    document.categories[-1].label += " (2)"
    await published(db_url, document)
    assert await service_role.fetchrow(
        "SELECT current_version, last_material_version FROM consent_properties"
    ) == (2, 2)
    with pytest.raises(asyncpg.CheckViolationError, match="moves only forward"):
        await service_role.execute(
            "UPDATE consent_properties SET current_version = 1, last_material_version = 1"
        )
    with pytest.raises(asyncpg.CheckViolationError, match="as its last material version, not 2"):
        await service_role.execute(
            "INSERT INTO consent_schema_versions (property, version, content, content_sha256,"
            " material, last_material_version, published_by) SELECT property, 3, content,"
            " content_sha256, false, 1, 'x' FROM consent_schema_versions WHERE version = 2"
        )
    updated = await service_role.fetchval("SELECT updated_at FROM consent_properties")
    await service_role.execute("UPDATE consent_properties SET updated_at = '2000-01-01'")
    assert await service_role.fetchval("SELECT updated_at FROM consent_properties") > updated


# What 0024 changes: the recording function, the two trigger functions, the window table.
DEFINITIONS = (
    "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.proacl::text FROM pg_proc p"
    " WHERE p.pronamespace = 'public'::regnamespace AND p.proname IN ('consent_record_events',"
    " 'consent_properties_pointers', 'consent_schema_versions_lineage')"
    " UNION ALL SELECT tgname, tgrelid::regclass::text, NULL FROM pg_trigger"
    " WHERE NOT tgisinternal UNION ALL SELECT relname, NULL, NULL FROM pg_class"
    " WHERE relname = 'consent_event_time_window' ORDER BY 1, 2"
)


async def test_migration_0024_downgrade_restores_the_definitions_exactly(server_url: str) -> None:
    async with database_at(server_url, "0023") as owner_url:
        db = await asyncpg.connect(owner_url)
        try:
            before = [tuple(row) for row in await db.fetch(DEFINITIONS)]
            config = alembic_config(owner_url)
            await asyncio.to_thread(command.upgrade, config, "0024")
            assert [tuple(row) for row in await db.fetch(DEFINITIONS)] != before
            await asyncio.to_thread(command.downgrade, config, "0023")
            assert [tuple(row) for row in await db.fetch(DEFINITIONS)] == before
        finally:
            await db.close()

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
         "not cancelled with last material version 0"),
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


# A version of itsailor published by the service's role to take effect in a week, as `schema
# publish --effective-at` does (content changed: a material version).
ANNOUNCED = (
    "INSERT INTO consent_schema_versions (property, version, content, content_sha256, material,"
    " last_material_version, published_by, effective_at) SELECT property, 2,"
    " content || '{\"announced\": true}', 'other', true, 2, 'x', now() + interval '7 days'"
    " FROM consent_schema_versions WHERE version = 1"
)


async def test_an_announced_version_is_not_in_force_before_its_time(
    service_role: asyncpg.Connection,
) -> None:
    """Pending for a week: not made current early by the role, and no event on it is stored,
    whatever time the batch gives (the window is the limit)."""
    await service_role.execute(ANNOUNCED)
    await service_role.execute("UPDATE consent_properties SET pending_version = 2")
    with pytest.raises(asyncpg.CheckViolationError, match="in effect and not cancelled"):
        await service_role.execute(
            "UPDATE consent_properties SET current_version = 2, last_material_version = 2,"
            " pending_version = NULL"
        )
    early = new_event(property="itsailor", schema_version=2, recorded_at=datetime.now(UTC))
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="was not in force") as refused:
        await service_role.fetch(RECORD_SQL, batch_json([early]), None, None)
    assert refused.value.constraint_name == "consent_events_version_in_force"
    assert await service_role.fetchval(STORED) == 0


async def test_a_cancelled_version_is_never_current_pending_or_cancelled_in_force(
    service_role: asyncpg.Connection,
) -> None:
    await service_role.execute(ANNOUNCED)
    await service_role.execute("UPDATE consent_properties SET pending_version = 2")
    with pytest.raises(asyncpg.CheckViolationError, match="has taken effect"):
        await service_role.execute(
            "INSERT INTO consent_schema_cancellations (property, version, cancelled_by)"
            " VALUES ('itsailor', 1, 'x')"
        )
    await service_role.execute("UPDATE consent_properties SET pending_version = NULL")
    await service_role.execute(
        "INSERT INTO consent_schema_cancellations (property, version, cancelled_by, cancelled_at)"
        " VALUES ('itsailor', 2, 'x', '2000-01-01')"
    )
    assert await service_role.fetchval(
        "SELECT cancelled_at > now() - interval '1 minute' FROM consent_schema_cancellations"
    )  # stamped with the time of writing
    for pointer in ("pending_version = 2", "current_version = 2, last_material_version = 2"):
        with pytest.raises(asyncpg.CheckViolationError, match="not cancelled"):
            await service_role.execute(f"UPDATE consent_properties SET {pointer}")


async def test_a_version_is_published_now_and_never_takes_effect_before(
    service_role: asyncpg.Connection,
) -> None:
    """A back-dated version (published and in effect in 2020) is refused; `published_at` is the
    database's time whatever the role writes."""
    with pytest.raises(asyncpg.CheckViolationError, match="before it is published"):
        await service_role.execute(ANNOUNCED.replace("now() + interval '7 days'", "'2020-01-01'"))
    await service_role.execute(
        ANNOUNCED.replace("published_by,", "published_by, published_at,").replace(
            "'x', now()", "'x', '2020-01-01', now()"
        )
    )
    assert await service_role.fetchval(
        "SELECT published_at > now() - interval '1 minute' FROM consent_schema_versions"
        " WHERE version = 2"
    )


async def test_an_event_on_a_version_cancelled_meanwhile_is_a_422_not_a_500(
    service_role: asyncpg.Connection, client: httpx.AsyncClient, owner_url: str
) -> None:
    """The race the service's own check cannot see: a version cancelled in another process
    within its cached pointer's second. Here the owner cancels the version the service serves
    (which the role could not): the database refuses the event, the client gets a 422."""
    assert (await client.post(f"{ITSAILOR}/consent-events", json=event())).status_code == 201
    owner = await asyncpg.connect(owner_url)
    try:
        await owner.execute(
            "INSERT INTO consent_schema_cancellations (property, version, cancelled_by)"
            " VALUES ('itsailor', 1, 'x')"
        )
    finally:
        await owner.close()
    answer = await client.post(f"{ITSAILOR}/consent-events", json=event())
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith(
        "schema version 1 of property 'itsailor' was not in force"
    )
    assert answer.json()["errors"] == [
        {"pointer": "/body/schema_version", "detail": "not in force"}
    ]
    assert await service_role.fetchval(STORED) == 1


# What 0024 changes: the recording function, the trigger functions, the window table.
DEFINITIONS = (
    "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.proacl::text FROM pg_proc p"
    " WHERE p.pronamespace = 'public'::regnamespace AND p.proname IN ('consent_record_events',"
    " 'consent_properties_pointers', 'consent_schema_versions_lineage',"
    " 'consent_schema_cancellations_pending')"
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

"""The event store itself: append-only in the database, and the migrations match the models."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

import service.tables  # noqa: F401  (every table on Base.metadata)
from service.core.db import Base, async_url
from service.ledger.tables import not_a_partition
from tests.factories import event, example, published


@pytest.fixture
async def one_event(client: httpx.AsyncClient, db_url: str) -> str:
    await published(db_url, example("itsailor"))
    response = await client.post(
        "/v1/properties/itsailor/consent-events",
        json=event("accept-all", user_id="u-1", page_url="https://itsailor.io/a"),
        headers={"User-Agent": "ua"},
    )
    return str(response.json()["event_id"])


@pytest.mark.usefixtures("one_event")
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE consent_events SET effective = '{}'::jsonb",
        "UPDATE consent_events SET ip_hash = NULL",
        "DELETE FROM consent_events",
        "TRUNCATE consent_events",
    ],
)
async def test_events_cannot_be_changed_or_removed(db: asyncpg.Connection, statement: str) -> None:
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
        await db.execute(statement)
    assert await db.fetchval("SELECT count(*) FROM consent_events WHERE ip_hash IS NOT NULL") == 1


@pytest.mark.usefixtures("one_event")
async def test_the_erasure_path_may_only_clear_identifying_columns(db: asyncpg.Connection) -> None:
    async with db.transaction():
        await db.execute("SET LOCAL consent.erasure = 'on'")
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="only clear"):
            async with db.transaction():  # a savepoint
                await db.execute(
                    "UPDATE consent_events SET effective = '{}'::jsonb, subject_id = NULL"
                )
        await db.execute(
            "UPDATE consent_events SET subject_id = NULL, ip_hash = NULL, user_hash = NULL,"
            " hash_key_id = NULL, user_agent = NULL, page_url = NULL, tcf_string = NULL,"
            " gpp_string = NULL, request_hash = NULL, salt = NULL, anonymised_at = now()"
        )
    assert await db.fetchval("SELECT count(*) FROM consent_events WHERE subject_id IS NULL") == 1
    async with db.transaction():
        await db.execute("SET LOCAL consent.erasure = 'on'")
        # A delete names the audited erasure its tombstones belong to (migration 0012).
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="audited erasure"):
            async with db.transaction():
                await db.execute("DELETE FROM consent_events")
        await db.execute(f"SET LOCAL consent.erasure_id = '{uuid.uuid4()}'")
        await db.execute("DELETE FROM consent_events")
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 0


async def test_migrations_match_the_models(db_url: str) -> None:
    """Alembic made the tables; autogenerate against them finds nothing left to migrate."""
    engine = create_async_engine(async_url(db_url))
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(
                        sync, opts={"compare_type": True, "include_name": not_a_partition}
                    ),
                    Base.metadata,
                )
            )
    finally:
        await engine.dispose()
    assert differences == []


@pytest.mark.usefixtures("one_event")
async def test_an_event_without_a_leaf_is_refused(db: asyncpg.Connection) -> None:
    """Every event after the genesis seal is in the ledger: the database refuses one without a
    leaf and identity, even from the owner (a NULL must not pass the check)."""
    with pytest.raises(asyncpg.exceptions.CheckViolationError, match="ck_consent_events_leaf"):
        await db.execute(
            "INSERT INTO consent_events (event_id, property, subject_id, event_type,"
            " schema_version, choices, effective, gpc, dnt, signals_applied, request_hash,"
            " recorded_at) SELECT gen_random_uuid(), property, subject_id, event_type,"
            " schema_version, choices, effective, gpc, dnt, signals_applied, request_hash,"
            " recorded_at FROM consent_events"
        )

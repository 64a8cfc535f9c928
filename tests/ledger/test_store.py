"""The event store itself: append-only in the database, and the migrations match the models."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx
import orjson
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

import service.tables  # noqa: F401  (every table on Base.metadata)
from service.core.db import Base
from service.core.db_url import async_url
from service.ledger.event import NewEvent
from service.ledger.leaf import attach_leaf
from service.ledger.tables import not_a_partition
from service.ledger.writer import RECORD_SQL, EventWriter, batch_json
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
        anonymise = (
            "UPDATE consent_events SET subject_id = NULL, ip_hash = NULL, user_hash = NULL,"
            " hash_key_id = NULL, user_agent = NULL, page_url = NULL, tcf_string = NULL,"
            " gpp_string = NULL, request_hash = NULL, salt = NULL, anonymised_at = now()"
        )
        # An anonymisation names its audited erasure too (migration 0025).
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="audited erasure"):
            async with db.transaction():
                await db.execute(anonymise)
        erasure = uuid.uuid4()
        await db.execute(f"SET LOCAL consent.erasure_id = '{erasure}'")
        await db.execute(anonymise)
    assert await db.fetchval("SELECT count(*) FROM consent_events WHERE subject_id IS NULL") == 1
    assert await db.fetchval("SELECT erasure FROM ledger_anonymisations") == erasure
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


def _stored_event(**changes: object) -> NewEvent:
    values: dict[str, object] = {
        "event_id": uuid.uuid4(), "property": "itsailor", "subject_id": uuid.uuid4(),
        "event_type": "accept-all", "schema_version": 1,
        "choices": {"analytics": True, "necessary": True},
        "effective": {"analytics": True, "necessary": True}, "gpc": False, "dnt": False,
        "signals_applied": [], "source": "banner", "entered_by": None, "ip_hash": "a" * 64,
        "user_hash": None, "hash_key_id": "k1", "user_agent": "ua", "page_url": None,
        "tcf_string": None, "gpp_string": None, "request_hash": "b" * 64,
        "recorded_at": datetime.now(UTC),
    }  # fmt: skip
    values.update(changes)
    return attach_leaf(NewEvent(**values), "e" * 64)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("unknown", "named"),
    [
        ({"schema_version": 2}, "schema version 2 of property 'itsailor' was not in force"),
        ({"property": "elsewhere"}, "schema version 1 of property 'elsewhere' was not in force"),
    ],
)
async def test_an_event_naming_an_unpublished_version_fails_its_whole_statement(
    db_url: str, db: asyncpg.Connection, unknown: dict[str, object], named: str
) -> None:
    """No foreign key checks each row (migration 0018): the function checks the batch's versions
    (since 0024, that each was in force) and refuses the whole statement with the foreign key's
    own error, even for the service's role, and stores nothing of it."""
    await published(db_url, example("itsailor"))
    batch = batch_json([_stored_event(), _stored_event(**unknown)])
    service = await asyncpg.connect(db_url)
    try:
        with pytest.raises(asyncpg.exceptions.ForeignKeyViolationError, match=named):
            await service.fetch(RECORD_SQL, batch, None, None)
        stored = await service.fetch(RECORD_SQL, batch_json([_stored_event()]), None, None)
    finally:
        await service.close()
    assert len(stored) == 1
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 1
    assert await db.fetchval("SELECT count(*) FROM consent_event_ids") == 1


async def test_the_writer_stores_a_batchs_good_events_beside_one_naming_no_version(
    db_url: str, db: asyncpg.Connection
) -> None:
    """The refusal is a row error, so the writer tries the batch's events one by one: only the
    event at fault fails."""
    await published(db_url, example("itsailor"))
    writer = EventWriter(db_url)
    writer.start()
    try:
        good, bad, also_good = [
            _stored_event(), _stored_event(schema_version=7), _stored_event()
        ]  # fmt: skip
        results = await asyncio.gather(
            *(writer.write(new) for new in (good, bad, also_good)), return_exceptions=True
        )
    finally:
        await writer.close()
    assert [type(result).__name__ for result in results] == [
        "Written", "ForeignKeyViolationError", "Written"
    ]  # fmt: skip
    stored = await db.fetch("SELECT event_id FROM consent_events")
    assert {row["event_id"] for row in stored} == {good.event_id, also_good.event_id}


def _as_objects(events: list[NewEvent]) -> str:
    """A batch as the release before migration 0027 sent it: one JSON object per row."""
    return orjson.dumps(events, default=lambda value: "\\x" + value.hex()).decode()


ROW_AS_STORED = (
    "SELECT to_jsonb(e) - 'seq' - 'event_id' - 'receipt' FROM consent_events e WHERE event_id = $1"
)


async def test_a_batch_of_row_objects_from_the_previous_release_is_stored_the_same(
    db_url: str, db: asyncpg.Connection
) -> None:
    """Mid rolling upgrade, replicas of the release before 0027 send each row as an object: the
    function still takes those, stores exactly what the same events sent as arrays store, and
    refuses what it refuses either way (docs/architecture.md, "Migrations")."""
    await published(db_url, example("itsailor"))
    kinds = (
        {
            "user_hash": "c" * 64,
            "page_url": "https://x.io/",
            "gpc": True,
            "signals_applied": ["gpc"],
        },
        {"ip_hash": None, "hash_key_id": None, "user_agent": None, "source": "signal"},
    )
    as_arrays = [_stored_event(**kind) for kind in kinds]
    # The same events under other ids: the rows stored must be equal but for the id.
    as_objects = [dataclasses.replace(event, event_id=uuid.uuid4()) for event in as_arrays]
    service = await asyncpg.connect(db_url)
    try:
        stored = await service.fetch(RECORD_SQL, batch_json(as_arrays), None, None)
        stored += await service.fetch(RECORD_SQL, _as_objects(as_objects), None, None)
        again = await service.fetch(RECORD_SQL, _as_objects(as_objects), None, None)
        with pytest.raises(asyncpg.exceptions.ForeignKeyViolationError, match="was not in force"):
            await service.fetch(
                RECORD_SQL, _as_objects([_stored_event(schema_version=2)]), None, None
            )
    finally:
        await service.close()
    assert len(stored) == 4
    assert again == []  # their ids are known: nothing stored twice
    for array_event, object_event in zip(as_arrays, as_objects, strict=True):
        array_row = await db.fetchval(ROW_AS_STORED, array_event.event_id)
        object_row = await db.fetchval(ROW_AS_STORED, object_event.event_id)
        assert array_row is not None
        assert object_row == array_row


async def test_the_batch_is_refused_for_what_0024_refused_it_for_and_duplicate_ids(
    db_url: str, db: asyncpg.Connection
) -> None:
    """Rows read by position (migration 0027) are refused as 0024 refused them, in the same
    order: the event time first, then each value as it is stored, a key id too long even on an
    id already stored. And an id may appear in a batch only once."""
    await published(db_url, example("itsailor"))
    await db.execute("UPDATE consent_event_time_window SET tolerance = interval '5 minutes'")
    stored = _stored_event()
    service = await asyncpg.connect(db_url)
    try:
        assert len(await service.fetch(RECORD_SQL, batch_json([stored]), None, None)) == 1
        # A row with a value that is no integer, beside a row from another time: the time first.
        [bad_version] = orjson.loads(batch_json([_stored_event()]))
        bad_version[4] = "x"
        [old] = orjson.loads(
            batch_json([_stored_event(recorded_at=datetime(2019, 6, 1, tzinfo=UTC))])
        )
        with pytest.raises(asyncpg.PostgresError, match="not the database's") as refused:
            await service.fetch(RECORD_SQL, orjson.dumps([bad_version, old]).decode(), None, None)
        assert refused.value.sqlstate == "CR001"
        with pytest.raises(asyncpg.InvalidTextRepresentationError):
            await service.fetch(RECORD_SQL, orjson.dumps([bad_version]).decode(), None, None)
        too_long = dataclasses.replace(stored, hash_key_id="k" * 33)
        with pytest.raises(asyncpg.StringDataRightTruncationError):
            await service.fetch(RECORD_SQL, batch_json([too_long]), None, None)
        twice = _stored_event()
        with pytest.raises(asyncpg.UniqueViolationError, match="more than once"):
            await service.fetch(RECORD_SQL, batch_json([twice, twice]), None, None)
        upper = orjson.loads(batch_json([twice]))[0]
        upper[0] = upper[0].upper()
        [row] = orjson.loads(batch_json([twice]))
        with pytest.raises(asyncpg.UniqueViolationError, match="more than once"):
            await service.fetch(RECORD_SQL, orjson.dumps([row, upper]).decode(), None, None)
        # A row that is no array reads as a row of nothing: refused as a row (class 23).
        with pytest.raises(asyncpg.IntegrityConstraintViolationError):
            await service.fetch(RECORD_SQL, orjson.dumps([row, None]).decode(), None, None)
    finally:
        await service.close()
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 1


async def test_a_row_without_an_event_id_is_refused_as_a_missing_id(
    db_url: str, db: asyncpg.Connection
) -> None:
    await published(db_url, example("itsailor"))
    [row] = orjson.loads(batch_json([_stored_event()]))
    row[0] = None
    service = await asyncpg.connect(db_url)
    try:
        with pytest.raises(asyncpg.NotNullViolationError):
            await service.fetch(RECORD_SQL, orjson.dumps([row]).decode(), None, None)
    finally:
        await service.close()
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 0

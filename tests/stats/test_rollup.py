"""The rollup (docs/stats.md, "Rollup"): events reach the statistics tables off the write path,
the tail above the watermark is counted from the events, and nothing is counted twice or lost
whatever order inserts, erasures and rollups take."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from sqlalchemy.ext.asyncio import AsyncEngine

from service.core.db import create_engine
from service.core.migrations import alembic_config
from service.core.pipeline import ConsentAPI
from service.ledger.event import NewEvent
from service.ledger.leaf import attach_leaf
from service.ledger.writer import RECORD_SQL, batch_json
from service.state import of as services
from service.stats.rollup import roll_up, seal, seal_and_roll_up
from tests.conftest import database_at
from tests.factories import APPLYING, Clock, api_key, applying_example, bearer, published

STATS = f"/v1/properties/{APPLYING}/stats"
DAY = datetime(2026, 3, 2, tzinfo=UTC)
SINCE, UNTIL = DAY - timedelta(days=2), DAY + timedelta(days=2)


@pytest.fixture
async def engine(owner_url: str, db_url: str) -> Any:
    await published(db_url, applying_example())
    made = create_engine(db_url, pool_size=4)
    yield made
    await made.dispose()


TYPES = ("accept-all", "reject-all", "save-selection", "withdraw", "re-prompt")


def new_event(
    recorded_at: datetime, gpc: bool = False, rng: random.Random | None = None
) -> NewEvent:
    """An event as the writer receives it (the values need not have come through the API)."""
    rng = rng or random.Random()
    choices = {key: rng.random() < 0.5 for key in ("analytics", "functional", "marketing")}
    event = NewEvent(
        event_id=uuid.uuid4(),
        property=APPLYING,
        subject_id=uuid.uuid4(),
        event_type=rng.choice(TYPES),
        schema_version=1,
        choices={"necessary": True, **choices},
        effective={"necessary": True, **choices, **({"marketing": False} if gpc else {})},
        gpc=gpc,
        dnt=False,
        signals_applied=["gpc"] if gpc else [],
        source="banner",
        entered_by=None,
        ip_hash=None,
        user_hash=None,
        hash_key_id=None,
        user_agent=None,
        page_url=None,
        tcf_string=None,
        gpp_string=None,
        request_hash="0" * 64,
        recorded_at=recorded_at,
    )
    return attach_leaf(event, "e" * 64)


async def table_total(owner: asyncpg.Connection) -> tuple[int, int]:
    """Events in the daily and in the hourly table."""
    row = await owner.fetchrow(
        "SELECT (SELECT coalesce(sum(events), 0) FROM consent_stats_daily) AS days,"
        " (SELECT coalesce(sum(events), 0) FROM consent_stats_hourly) AS hours"
    )
    assert row is not None
    return int(row["days"]), int(row["hours"])


async def counts_from_api(client: httpx.AsyncClient, headers: dict[str, str]) -> Counter[str]:
    response = await client.get(
        STATS, params={"since": SINCE.isoformat(), "until": UNTIL.isoformat()}, headers=headers
    )
    assert response.status_code == 200, response.text
    found: Counter[str] = Counter()
    for item in response.json()["items"]:
        for event_type, n in item["events"].items():
            found[f"{item['day']} {event_type}"] += n
        found[f"{item['day']} gpc"] += item["signals"]["gpc"]
        for key, both in item["categories"].items():
            found[f"{item['day']} {key} granted"] += both["granted"]
    return +found


async def counts_from_events(owner: asyncpg.Connection) -> Counter[str]:
    found: Counter[str] = Counter()
    for row in await owner.fetch(
        "SELECT recorded_at, event_type, gpc, effective::text FROM consent_events"
    ):
        day = row["recorded_at"].astimezone(UTC).date().isoformat()
        found[f"{day} {row['event_type']}"] += 1
        found[f"{day} gpc"] += row["gpc"]
        if row["event_type"] != "re-prompt":
            for key, on in json.loads(row["effective"]).items():
                if key != "necessary":  # the API counts the optional categories
                    found[f"{day} {key} granted"] += on
    return +found


async def write(db_url: str, count: int, rng: random.Random) -> list[uuid.UUID]:
    """`count` events as the event writer sends them, in batches; their subject ids."""
    subjects = []
    connection = await asyncpg.connect(db_url)
    try:
        while count:
            batch = []
            for _ in range(min(count, rng.randint(1, 40))):
                the_event = new_event(
                    recorded_at=DAY + timedelta(seconds=rng.randint(-86_400, 86_400)),
                    gpc=rng.random() < 0.3,
                    rng=rng,
                )
                batch.append(the_event)
                subjects.append(the_event.subject_id)
            await connection.fetch(RECORD_SQL, batch_json(batch), None, None)
            count -= len(batch)
    finally:
        await connection.close()
    return subjects


async def test_a_rollup_moves_events_into_the_tables_and_reads_do_not_change(
    engine: AsyncEngine, db_url: str, owner_url: str, client: httpx.AsyncClient
) -> None:
    reader = bearer(await api_key(db_url, "stats:read"))
    owner = await asyncpg.connect(owner_url)
    try:
        await write(db_url, 120, random.Random(1))
        before = await counts_from_api(client, reader)
        assert before == await counts_from_events(owner)
        assert await table_total(owner) == (0, 0)  # all of it tail

        assert await seal_and_roll_up(engine) > 0
        assert await table_total(owner) == (120, 120)
        rolled = await owner.fetchval("SELECT rolled FROM consent_stats_rollup")
        assert rolled == await owner.fetchval("SELECT max(seq) FROM consent_events")
        assert await counts_from_api(client, reader) == before

        assert await seal_and_roll_up(engine) == 0  # nothing new: nothing done
    finally:
        await owner.close()


async def test_a_seal_does_not_pass_an_insert_still_in_flight(
    engine: AsyncEngine, db_url: str, owner_url: str
) -> None:
    owner = await asyncpg.connect(owner_url)
    inserting = await asyncpg.connect(db_url)
    try:
        await write(db_url, 5, random.Random(2))
        transaction = inserting.transaction()
        await transaction.start()
        await inserting.fetch(RECORD_SQL, batch_json([new_event(recorded_at=DAY)]), None, None)
        # Its seq is handed out but not committed: a seal now must not cover it, nor wait long.
        assert not await seal(engine)
        assert await owner.fetchval("SELECT sealed FROM consent_stats_seal") == 0
        await transaction.commit()
        # Nor queue behind maintenance (a VACUUM's lock) and hold back inserts meanwhile.
        async with owner.transaction():
            await owner.execute("LOCK TABLE consent_events IN SHARE UPDATE EXCLUSIVE MODE")
            took = []
            for _ in range(3):  # at once: not after the 50 ms lock_timeout
                started = asyncio.get_running_loop().time()
                assert not await seal(engine)
                took.append(asyncio.get_running_loop().time() - started)
            assert min(took) < 0.03
        # A rollup in progress (holding its row) does not hold a seal, and so inserts, back.
        async with owner.transaction():
            await owner.execute("SELECT FROM consent_stats_rollup FOR UPDATE")
            assert await seal(engine)
        await roll_up(engine)
        assert await table_total(owner) == (6, 6)
    finally:
        await inserting.close()
        await owner.close()


async def test_inserts_erasures_and_rollups_in_any_order_count_each_event_once(
    engine: AsyncEngine, db_url: str, owner_url: str, client: httpx.AsyncClient
) -> None:
    reader = bearer(await api_key(db_url, "stats:read"))
    eraser = bearer(await api_key(db_url, "dsr:erase"))
    rng = random.Random(20261129)
    subjects: list[uuid.UUID] = []
    stop = asyncio.Event()

    async def writing() -> None:
        for _ in range(40):
            subjects.extend(await write(db_url, 15, rng))
            await asyncio.sleep(0.01)

    async def erasing() -> None:
        while not stop.is_set():
            if subjects:  # a recent one: rolled up or not yet, or being rolled up
                subject = rng.choice(subjects[-20:])
                response = await client.post(
                    "/v1/dsr/erasures", json={"subject_id": str(subject)}, headers=eraser
                )
                assert response.status_code == 200, response.text
            await asyncio.sleep(0)

    async def rolling() -> None:
        while not stop.is_set():
            await seal(engine)
            await roll_up(engine, chunk=rng.randint(1, 8))  # small chunks: many interleavings
            await asyncio.sleep(rng.random() / 100)

    tasks = [asyncio.create_task(job()) for job in (erasing, erasing, rolling, rolling)]
    await writing()
    stop.set()
    await asyncio.gather(*tasks)

    owner = await asyncpg.connect(owner_url)
    try:
        truth = await counts_from_events(owner)
        assert sum(truth.values()) > 0
        assert await counts_from_api(client, reader) == truth
        await seal_and_roll_up(engine)
        assert await counts_from_api(client, reader) == truth
        stored = await owner.fetchval("SELECT count(*) FROM consent_events")
        assert await table_total(owner) == (stored, stored)
        assert await traces(owner) == []  # every erasure's subtraction folded in
    finally:
        await owner.close()


async def traces(owner: asyncpg.Connection) -> list[asyncpg.Record]:
    """Rows an erasure's subtraction left: outside shard 0, or counting nothing (or less)."""
    return [
        row
        for table in ("consent_stats_daily", "consent_stats_hourly")
        for row in await owner.fetch(f"SELECT * FROM {table} WHERE shard <> 0 OR events <= 0")
    ]


async def test_an_erased_decision_leaves_no_row_of_its_own_in_the_statistics(
    engine: AsyncEngine, db_url: str, owner_url: str, client: httpx.AsyncClient
) -> None:
    """The delete trigger subtracts in a shard of its own; the next rollup folds it into shard 0
    and drops what folds to nothing (migration 0026): no row tells the erased decision's hour,
    type and choices."""
    reader = bearer(await api_key(db_url, "stats:read"))
    eraser = bearer(await api_key(db_url, "dsr:erase"))
    await write(db_url, 60, random.Random(7))
    lone = new_event(recorded_at=DAY - timedelta(hours=36), gpc=True)  # a day of its own
    connection = await asyncpg.connect(db_url)
    try:
        await connection.fetch(RECORD_SQL, batch_json([lone]), None, None)
    finally:
        await connection.close()
    await seal_and_roll_up(engine)
    owner = await asyncpg.connect(owner_url)
    try:
        others = await owner.fetchval(
            "SELECT subject_id FROM consent_events WHERE subject_id <> $1 LIMIT 1", lone.subject_id
        )
        for subject in (lone.subject_id, others):
            response = await client.post(
                "/v1/dsr/erasures", json={"subject_id": str(subject)}, headers=eraser
            )
            assert response.json()["deleted"] == 1, response.text
        assert await traces(owner)  # the subtractions, until the next rollup
        await seal_and_roll_up(engine)
        assert await traces(owner) == []
        day_of_lone = (DAY - timedelta(hours=36)).date()
        assert (
            await owner.fetchval(
                "SELECT count(*) FROM consent_stats_daily WHERE day = $1", day_of_lone
            )
            == 0
        )
        assert await counts_from_api(client, reader) == await counts_from_events(owner)
        assert await table_total(owner) == (59, 59)  # 60 and the lone one, two erased
    finally:
        await owner.close()


async def test_a_rollup_refuses_a_snapshot_older_than_its_lock(db_url: str, owner_url: str) -> None:
    connection = await asyncpg.connect(db_url)
    try:
        async with connection.transaction(isolation="repeatable_read"):
            with pytest.raises(asyncpg.RaiseError, match="READ COMMITTED"):
                await connection.fetchval("SELECT consent_stats_rollup(10)")
    finally:
        await connection.close()


async def test_the_service_rolls_up_in_the_background(
    owner_url: str, db_url: str, tmp_path: Any
) -> None:
    from service.app import create_app
    from tests.conftest import make_settings

    await published(db_url, applying_example())
    await write(db_url, 30, random.Random(3))
    app: ConsentAPI = create_app(make_settings(db_url, tmp_path, seal_seconds=0.05))
    owner = await asyncpg.connect(owner_url)
    try:
        async with app.router.lifespan_context(app):
            services(app).clock = Clock(DAY)
            for _ in range(200):
                if await owner.fetchval("SELECT rolled FROM consent_stats_rollup") > 0:
                    break
                await asyncio.sleep(0.05)
        assert await table_total(owner) == (30, 30)
    finally:
        await owner.close()


ROLLUP_FUNCTION = (
    "SELECT pg_get_functiondef('consent_stats_rollup(bigint)'::regprocedure),"
    " (SELECT proacl::text FROM pg_proc WHERE oid = 'consent_stats_rollup(bigint)'::regprocedure)"
)


async def test_migration_0026_downgrade_restores_the_rollup_exactly(server_url: str) -> None:
    async with database_at(server_url, "0025") as owner_url:
        db = await asyncpg.connect(owner_url)
        try:
            before = tuple(await db.fetchrow(ROLLUP_FUNCTION) or ())
            config = alembic_config(owner_url)
            await asyncio.to_thread(command.upgrade, config, "0026")
            assert tuple(await db.fetchrow(ROLLUP_FUNCTION) or ()) != before
            await asyncio.to_thread(command.downgrade, config, "0025")
            assert tuple(await db.fetchrow(ROLLUP_FUNCTION) or ()) == before
        finally:
            await db.close()

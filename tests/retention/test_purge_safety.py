"""The purge (migration 0023, docs/retention.md): the policy of the version in force, a scheduled
one included; a month over at its UTC end whatever the session's TimeZone; and a whole month's
DROP that never leaves inserts queued behind a long reader for more than its 2 s lock_timeout."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from service.consent_schema.publishing import publish
from service.core.db import create_engine, create_sessionmaker
from service.core.pipeline import ConsentAPI
from service.state import of as services
from tests.factories import Clock, event, example, published
from tests.retention.test_purge import purge, with_retention

DAY = timedelta(days=1)
EVENTS = "/v1/properties/itsailor/consent-events"


async def dry_run(owner_url: str, as_of: datetime) -> dict[str, Any]:
    code, out = await asyncio.to_thread(
        purge, owner_url, "--dry-run", "--as-of", as_of.isoformat(), "--json"
    )
    assert code == 0, out
    found: dict[str, Any] = json.loads(out)
    return found


async def test_the_policy_is_the_version_in_force_a_scheduled_one_included(
    client: httpx.AsyncClient, db: asyncpg.Connection, db_url: str, owner_url: str
) -> None:
    await published(db_url, with_retention(example("itsailor"), 1095, 1460))
    for _ in range(3):
        assert (await client.post(EVENTS, json=event())).status_code == 201
    at = datetime.now(UTC) + timedelta(seconds=1)
    engine = create_engine(db_url, pool_size=1)
    try:
        async with create_sessionmaker(engine).begin() as session:
            await publish(
                session,
                with_retention(example("itsailor"), 1, 2),
                material=True,
                published_by="test",
                effective_at=at,
            )
    finally:
        await engine.dispose()

    # Not in force yet: version 1's policy, also as of a later date (v2 may still be cancelled).
    assert (await dry_run(owner_url, datetime.now(UTC) + 10 * DAY))["due"] == 0
    await asyncio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()) + 0.1)
    # In force now, though nothing promoted the stored pointer (only a publish or cancel does).
    pointer = await db.fetchrow(
        "SELECT current_version, pending_version FROM consent_properties WHERE name = 'itsailor'"
    )
    assert tuple(pointer) == (1, 2)
    found = await dry_run(owner_url, datetime.now(UTC) + 10 * DAY)
    assert (found["due"], found["by_property"]) == (3, {"itsailor": {"current": 3}})


def zone_misjudging_this_month(now: datetime) -> str | None:
    """A POSIX time zone whose offset the old reading doubled past this month's end (east) or
    before its start (west); offsets go up to 167 hours."""
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + 32 * DAY).replace(day=1)
    left, since = ((end - now).total_seconds() / 3600, (now - start).total_seconds() / 3600)
    if left < 2 * 166:
        return f"XXX-{math.ceil(left / 2) + 1}"  # POSIX signs: XXX-9 is UTC+9
    if since < 2 * 166:
        return f"XXX+{math.ceil(since / 2) + 1}"
    return None


async def test_a_month_is_over_at_its_utc_end_whatever_the_sessions_time_zone(
    app: ConsentAPI, client: httpx.AsyncClient, db: asyncpg.Connection, db_url: str
) -> None:
    await published(db_url, with_retention(example("itsailor"), 1, 1))
    now = datetime.now(UTC)
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = (this_month - DAY).replace(day=1)
    await db.execute("SELECT consent_events_add_months($1, $2)", last_month, now)
    clock = Clock(last_month + DAY)
    services(app).clock = clock
    assert (await client.post(EVENTS, json=event())).status_code == 201  # last month: over
    clock.now = now
    assert (await client.post(EVENTS, json=event())).status_code == 201  # this month: running

    zones = ["UTC", "Asia/Tokyo", "America/Los_Angeles"]
    misjudging = zone_misjudging_this_month(now)
    if misjudging is not None:
        zones.append(misjudging)
    for zone in zones:
        await db.execute(f"SET timezone = '{zone}'")
        found = json.loads(
            await db.fetchval(
                "SELECT consent_retention_purge(now() + interval '10 days', gen_random_uuid(),"
                " 'test', true)"
            )
        )
        assert (found["due"], found["whole_partitions"]) == (2, 1), zone  # last month only
    await db.execute("RESET timezone")


async def waiting_for_the_table(db: asyncpg.Connection) -> bool:
    """Some session waits for a lock on consent_events (the purge's DROP)."""
    found = await db.fetchval(
        "SELECT count(*) FROM pg_locks WHERE relation = 'consent_events'::regclass"
        " AND NOT granted AND mode = 'AccessExclusiveLock'"
    )
    return bool(found)


async def test_a_whole_months_drop_does_not_queue_inserts_behind_a_long_reader(
    app: ConsentAPI,
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    db_url: str,
    owner_url: str,
) -> None:
    await published(db_url, with_retention(example("itsailor"), 1, 1))
    start = (datetime.now(UTC) - 400 * DAY).replace(day=3)
    await db.execute("SELECT consent_events_add_months($1, $1)", start)
    services(app).clock = Clock(start)
    for _ in range(2):
        assert (await client.post(EVENTS, json=event())).status_code == 201
    services(app).clock = Clock(datetime.now(UTC))
    month = f"consent_events_{start:%Y_%m}"

    reader = await asyncpg.connect(owner_url)  # a DSR export, a pg_dump: a long transaction
    await reader.execute("BEGIN")
    await reader.fetchval("SELECT count(*) FROM consent_events")
    try:
        purging = asyncio.create_task(asyncio.to_thread(purge, owner_url, "--json"))
        for _ in range(100):
            if await waiting_for_the_table(db) or purging.done():
                break
            await asyncio.sleep(0.02)
        began = time.monotonic()
        inserted = asyncio.create_task(client.post(EVENTS, json=event(event_id=str(uuid.uuid4()))))
        done, _ = await asyncio.wait({inserted}, timeout=4)
        took = time.monotonic() - began
    finally:
        await reader.execute("COMMIT")  # the reader ends; whatever waited goes on
        await reader.close()
    assert done, "the insert waited for the reader"
    assert took < 3, took  # the drop's 2 s lock_timeout at most
    assert (await inserted).status_code == 201
    code, out = await purging
    assert code == 0, out
    summary = json.loads(out)
    # The month could not be dropped while read: its rows went through the erasure path.
    assert (summary["deleted"], summary["whole_partitions"], summary["partitions_dropped"]) == (
        2,
        1,
        0,
    )
    assert await db.fetchval(f"SELECT count(*) FROM {month}") == 0
    assert await db.fetchval("SELECT count(*) FROM ledger_tombstones") == 2

    # Unread, the next month wholly due is dropped, as before.
    later = start + 40 * DAY
    await db.execute("SELECT consent_events_add_months($1, $1)", later)
    services(app).clock = Clock(later)
    assert (await client.post(EVENTS, json=event())).status_code == 201
    code, out = await asyncio.to_thread(purge, owner_url, "--json")
    assert (json.loads(out)["deleted"], json.loads(out)["partitions_dropped"]) == (1, 1), out
    assert await db.fetchval("SELECT to_regclass($1)", f"consent_events_{later:%Y_%m}") is None

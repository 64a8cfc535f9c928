"""The event table's monthly partitions (migration 0014, docs/retention.md "Partitions"): the same
event_id is stored once across a month's boundary, `serve` makes the months ahead, a row outside
every month is counted, and a purge drops a month whole when everything in it is due."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from service.core.pipeline import ConsentAPI
from service.ledger.partitions import OUTSIDE, months_ahead
from service.state import of as services
from tests.factories import Clock, api_key, bearer, event, example, published
from tests.ledger.test_ledger import ledger, seal_now
from tests.retention.test_purge import purge, with_retention

DAY = timedelta(days=1)
EVENTS = "/v1/properties/itsailor/consent-events"


def month_name(moment: datetime) -> str:
    return f"consent_events_{moment:%Y_%m}"


async def partition_of(db: asyncpg.Connection, event_id: str) -> str:
    return str(
        await db.fetchval(
            "SELECT tableoid::regclass::text FROM consent_events WHERE event_id = $1",
            uuid.UUID(event_id),
        )
    )


async def test_one_event_id_is_stored_once_across_a_months_boundary(
    app: ConsentAPI, client: httpx.AsyncClient, db: asyncpg.Connection, db_url: str
) -> None:
    await published(db_url, example("itsailor"))
    await db.execute(
        "SELECT consent_events_add_months('2026-10-01T00:00:00Z', '2026-11-01T00:00:00Z')"
    )
    clock = Clock(datetime(2026, 10, 31, 23, 59, 59, 900_000, tzinfo=UTC))
    services(app).clock = clock
    body = event("accept-all", event_id=str(uuid.uuid4()))
    first = await client.post(EVENTS, json=body)
    assert first.status_code == 201, first.text

    clock.now = datetime(2026, 11, 1, 0, 0, 0, 100_000, tzinfo=UTC)  # the next partition
    again = await client.post(EVENTS, json=body)
    assert again.status_code == 200, again.text
    assert again.json()["recorded_at"] == first.json()["recorded_at"]
    assert again.json()["receipt"] == first.json()["receipt"]
    other = await client.post(EVENTS, json={**body, "event_type": "reject-all"})
    assert other.status_code == 409, other.text

    # Sent at once, in one group commit, into the later month: still one row.
    twice = await asyncio.gather(*(client.post(EVENTS, json=body) for _ in range(2)))
    assert [r.status_code for r in twice] == [200, 200]
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 1
    assert await partition_of(db, body["event_id"]) == "consent_events_2026_10"
    assert await db.fetchval("SELECT count(*) FROM consent_event_ids") == 1


async def test_serve_makes_the_months_ahead_and_counts_rows_outside_them(
    app: ConsentAPI, client: httpx.AsyncClient, db: asyncpg.Connection, db_url: str
) -> None:
    # What serve runs at start (and every minute): the template database the tests copy may
    # have been migrated in an earlier month, so its own months ahead are not this month's.
    await months_ahead(services(app).engine)
    now = datetime.now(UTC)
    months = [now.replace(day=1) + timedelta(days=31 * n) for n in range(4)]
    names = {month_name(month) for month in months}
    made = {
        row["relname"]
        for row in await db.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'consent_events'::regclass"
        )
    }
    assert names <= made, "this month's partition and the next three exist"

    await published(db_url, example("itsailor"))
    services(app).clock = Clock(now + 400 * DAY)  # a clock far off: no month for it
    response = await client.post(EVENTS, json=event())
    assert response.status_code == 201, response.text
    assert await partition_of(db, response.json()["event_id"]) == "consent_events_default"
    found = await months_ahead(services(app).engine)  # as the service's own role
    assert found == {"made": 0, "outside": 1, "missing": []}
    assert OUTSIDE._value.get() == 1

    # Partitions are the owner's: the service's role may not make or drop one itself.
    api = await asyncpg.connect(db_url)
    try:
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
            await api.execute("SELECT consent_events_add_months(now(), now())")
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
            await api.execute(f"DROP TABLE {month_name(now)}")
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
            await api.execute("DELETE FROM consent_event_ids")
    finally:
        await api.close()


async def test_a_purge_drops_a_month_whole_and_deletes_rows_elsewhere(
    app: ConsentAPI,
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    db_url: str,
    owner_url: str,
) -> None:
    await published(db_url, with_retention(example("itsailor"), 30, 400))
    now = datetime.now(UTC)
    start = (now - 800 * DAY).replace(day=3, hour=12)
    await db.execute("SELECT consent_events_add_months($1, $2)", start, now)
    clock = Clock(start)
    services(app).clock = clock

    async def at(moment: datetime, event_type: str, subject: uuid.UUID) -> str:
        clock.now = moment
        response = await client.post(EVENTS, json=event(event_type, subject_id=subject))
        assert response.status_code == 201, response.text
        return str(response.json()["event_id"])

    # Month A: three visitors, all past retention now.
    gone = [await at(start + n * DAY, "accept-all", uuid.uuid4()) for n in range(3)]
    # Month B: one visitor past retention, one whose decision a recent one replaced (kept for
    # superseded_days after that): the month stays, less one row.
    later = start + 40 * DAY
    x, y = uuid.uuid4(), uuid.uuid4()
    gone.append(await at(later, "accept-all", x))
    kept = [await at(later + DAY, "accept-all", y), await at(now - DAY, "reject-all", y)]
    month_a, month_b = month_name(start), month_name(later)
    assert month_a != month_b

    code, out = await asyncio.to_thread(purge, owner_url, "--dry-run", "--json")
    assert code == 0, out
    dry = json.loads(out)
    assert (dry["due"], dry["whole_partitions"], dry["partitions_dropped"]) == (4, 1, 0)
    assert await db.fetchval("SELECT to_regclass($1) IS NOT NULL", month_a)

    code, out = await asyncio.to_thread(purge, owner_url, "--json")
    assert code == 0, out
    done = json.loads(out)
    assert (done["due"], done["deleted"], done["partitions_dropped"]) == (4, 4, 1)
    assert await db.fetchval("SELECT to_regclass($1)", month_a) is None
    assert await db.fetchval("SELECT to_regclass($1) IS NOT NULL", month_b)
    left = {str(row["event_id"]) for row in await db.fetch("SELECT event_id FROM consent_events")}
    assert left == set(kept)
    ids = {str(row["event_id"]) for row in await db.fetch("SELECT event_id FROM consent_event_ids")}
    assert ids == set(kept), "the purged events' ids went with them"
    # Every purged event left its leaf, naming the purge: the ledger still verifies.
    tombstones = await db.fetch("SELECT erasure FROM ledger_tombstones")
    assert [str(t["erasure"]) for t in tombstones] == [done["audit_id"]] * 4
    await seal_now(app)
    code, out = await ledger(db_url, "verify")
    assert code == 0, out
    # The run is audited like any other.
    auditor = bearer(await api_key(db_url, "audit:read"))
    audit = (await client.get("/v1/dsr/audit", headers=auditor)).json()["items"]
    assert [(r["matched"], r["deleted"]) for r in audit if r["id"] == done["audit_id"]] == [(4, 4)]

    code, out = await asyncio.to_thread(purge, owner_url, "--json")
    assert (code, json.loads(out)["deleted"]) == (0, 0), out  # a second run removes nothing

"""Rows outside every month (migration 0023, docs/retention.md "Partitions"): a month that cannot
be made does not stop the others, `outside` is still counted, the gauge is set even when the call
fails, and a scheduled purge refreshes it at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx

from service.app import create_app
from service.core.pipeline import ConsentAPI
from service.ledger.partitions import OUTSIDE, months_ahead
from service.retention.purge import purge_due
from service.state import of as services
from tests.conftest import make_settings
from tests.factories import Clock, event, example, published
from tests.retention.test_purge import with_retention

DAY = timedelta(days=1)
EVENTS = "/v1/properties/itsailor/consent-events"
MONTHS_LOCK = 0x636F6E73656E7403  # migration 0014's


def first_of(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def test_a_month_that_cannot_be_made_does_not_stop_the_others(
    app: ConsentAPI, client: httpx.AsyncClient, db: asyncpg.Connection, db_url: str
) -> None:
    await published(db_url, example("itsailor"))
    # The last month of serve's window (now + 3 months), not made yet, and a row of it outside.
    now = datetime.now(UTC)
    last = datetime(now.year + (now.month + 2) // 12, (now.month + 2) % 12 + 1, 1, tzinfo=UTC)
    name = f"consent_events_{last:%Y_%m}"
    await db.execute(f"DROP TABLE IF EXISTS {name}")
    services(app).clock = Clock(last + DAY)
    assert (await client.post(EVENTS, json=event())).status_code == 201
    assert await db.fetchval("SELECT count(*) FROM consent_events_default") == 1

    # The months after it are made; it is not, and says why.
    beyond = first_of(last + 40 * DAY)
    made = await db.fetchval("SELECT consent_events_add_months($1, $2)", last - DAY, beyond)
    assert made == 1
    assert await db.fetchval("SELECT to_regclass($1) IS NOT NULL", f"consent_events_{beyond:%Y_%m}")
    assert await db.fetchval("SELECT to_regclass($1)", name) is None

    OUTSIDE.set(0)
    found = await months_ahead(services(app).engine)  # as the service's own role
    assert found == {"made": 0, "outside": 1, "missing": [name]}
    assert OUTSIDE._value.get() == 1


async def test_the_gauge_is_set_when_the_months_cannot_be_made(
    app: ConsentAPI, client: httpx.AsyncClient, db: asyncpg.Connection, db_url: str
) -> None:
    await published(db_url, example("itsailor"))
    services(app).clock = Clock(datetime.now(UTC) + 400 * DAY)
    assert (await client.post(EVENTS, json=event())).status_code == 201
    OUTSIDE.set(0)
    async with db.transaction():  # another caller making months, for longer than 2 s
        await db.execute("SELECT pg_advisory_xact_lock($1)", MONTHS_LOCK)
        found = await months_ahead(services(app).engine)
    assert (found["made"], found["outside"]) == (0, 1)
    assert "lock timeout" in found["error"], found
    assert OUTSIDE._value.get() == 1


async def test_a_scheduled_purge_refreshes_the_gauge(
    db: asyncpg.Connection, db_url: str, tmp_path: Path
) -> None:
    await published(db_url, with_retention(example("itsailor"), 1, 1))
    app = create_app(make_settings(db_url, tmp_path))
    async with app.router.lifespan_context(app):
        services(app).clock = Clock(datetime.now(UTC) - 400 * DAY)  # no month: outside
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            assert (await http.post(EVENTS, json=event())).status_code == 201
        engine = services(app).engine
        assert (await months_ahead(engine))["outside"] == 1
        assert OUTSIDE._value.get() == 1
        summary = await purge_due(engine)
        assert summary is not None
        assert summary["deleted"] == 1
        assert OUTSIDE._value.get() == 0  # not an hour later

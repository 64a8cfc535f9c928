"""Database faults: a service started with the database down serves 503 and recovers by itself;
a write the database did not confirm is never answered "nothing was stored"."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from service.app import create_app
from tests.conftest import CLIENT_IP, make_settings
from tests.factories import api_key, bearer, event, example, published
from tests.ops.test_readiness import _proxy_for
from tests.proxy import CuttableProxy

EVENTS = "/v1/properties/itsailor/consent-events"


@pytest.fixture
async def proxy(db_url: str) -> AsyncIterator[CuttableProxy]:
    await published(db_url, example("itsailor"))
    proxy = _proxy_for(db_url)
    await proxy.start()
    yield proxy
    proxy.thaw()
    await proxy.cut()


def through(db_url: str, proxy: CuttableProxy) -> str:
    url = make_url(db_url).set(host="127.0.0.1", port=proxy.port, query={})
    return url.render_as_string(hide_password=False)


async def test_a_service_started_with_the_database_down_serves_503_then_recovers(
    db_url: str, tmp_path: Path, proxy: CuttableProxy
) -> None:
    await proxy.cut()  # nothing listens on the port the service is given
    app = create_app(make_settings(through(db_url, proxy), tmp_path))
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
        down = await client.post(EVENTS, json=event())
        assert down.status_code == 503
        assert down.headers["retry-after"] == "5"
        await proxy.restore()
        started = time.monotonic()
        while (answer := await client.post(EVENTS, json=event())).status_code != 201:
            assert answer.status_code == 503
            assert time.monotonic() - started < 10, "did not recover"
            await asyncio.sleep(0.2)
        assert (await client.get("/readyz")).status_code == 200


async def test_an_unconfirmed_commit_is_answered_outcome_unknown_and_a_retry_settles_it(
    db_url: str, db: asyncpg.Connection, tmp_path: Path, proxy: CuttableProxy
) -> None:
    settings = make_settings(through(db_url, proxy), tmp_path, db_command_timeout=1.0)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        assert (await client.post(EVENTS, json=event())).status_code == 201  # connected
        body = event("reject-all")
        proxy.freeze()  # the statement goes out; no answer comes back
        hung = await client.post(EVENTS, json=body)
        proxy.thaw()
        assert hung.status_code == 503, hung.text
        problem = hung.json()
        assert problem["type"].endswith("/outcome-unknown")
        assert "may or may not be recorded" in problem["detail"]
        event_id = problem["event_id"]
        retried = await client.post(EVENTS, json=body | {"event_id": event_id})
        assert retried.status_code in (200, 201)
        assert retried.json()["event_id"] == event_id
        again = await client.post(EVENTS, json=body | {"event_id": event_id})
        assert again.status_code == 200
    assert (
        await db.fetchval("SELECT count(*) FROM consent_events WHERE event_id = $1", event_id) == 1
    )


async def test_metrics_answer_a_recently_checked_key_while_the_database_is_down(
    db_url: str, tmp_path: Path, proxy: CuttableProxy
) -> None:
    """The scrape must show the outage (its 503s), not fail with it (docs/architecture.md,
    "Metrics during an outage"); a key not checked before the outage is still refused."""
    app = create_app(make_settings(through(db_url, proxy), tmp_path))
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
    checked = bearer(await api_key(db_url, "metrics:read"))
    unchecked = bearer(await api_key(db_url, "metrics:read"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        assert (await client.get("/metrics", headers=checked)).status_code == 200
        await proxy.cut()
        assert (await client.post(EVENTS, json=event())).status_code == 503
        scraped = await client.get("/metrics", headers=checked)
        assert scraped.status_code == 200, scraped.text
        assert 'status="503"' in scraped.text
        refused = await client.get("/metrics", headers=unchecked)
        assert refused.status_code == 503
        unknown = {"Authorization": "Bearer not-a-key"}
        assert (await client.get("/metrics", headers=unknown)).status_code == 503

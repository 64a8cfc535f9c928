"""Database faults: a service started with the database down serves 503 and recovers by itself;
a write the database did not confirm is never answered "nothing was stored"."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from service.app import create_app
from service.state import of as services
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


async def test_a_statement_held_up_past_the_timeout_is_rolled_back_not_committed_later(
    db_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """The server gives up on the writer's statement before the service stops waiting for it:
    an acceptance held up on a lock is answered 503 and rolled back, so it cannot commit after a
    withdrawal acknowledged meanwhile and become the state again (docs/guarantees.md,
    "Acknowledged means committed")."""
    await published(db_url, example("itsailor"))
    app = create_app(make_settings(db_url, tmp_path, db_command_timeout=2.0))
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
    subject = uuid.uuid4()
    held = uuid.uuid4()
    blocker = db.transaction()
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        await blocker.start()
        await db.execute("INSERT INTO consent_event_ids VALUES ($1, now())", held)
        accepted = await client.post(
            EVENTS, json=event("accept-all", subject_id=subject, event_id=str(held))
        )
        assert accepted.status_code == 503, accepted.text
        assert accepted.json()["type"].endswith("/unavailable")  # nothing was stored
        assert accepted.json()["detail"].startswith("the database did not finish in time")
        withdrawn = await client.post(EVENTS, json=event("withdraw", subject_id=subject))
        assert withdrawn.status_code == 201, withdrawn.text
        await blocker.rollback()
        await asyncio.sleep(1.5)  # where a statement left running would commit now
        state = await client.get(f"/v1/properties/itsailor/consents/{subject}")
        assert state.json()["status"] == "withdrawn", state.text
    assert await db.fetchval("SELECT count(*) FROM consent_events WHERE event_id = $1", held) == 0


async def test_the_writer_commits_durably_whatever_the_database_says(
    db_url: str,
    db: asyncpg.Connection,
    tmp_path: Path,
    captured_logs_factory: Callable[[], io.StringIO],
) -> None:
    """`synchronous_commit = off` on the database would let a crash lose events answered 201:
    the writer's own connection commits with `on`, and says so."""
    await published(db_url, example("itsailor"))
    name = await db.fetchval("SELECT current_database()")
    await db.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    app = create_app(make_settings(db_url, tmp_path))
    logs = captured_logs_factory()
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        assert (await client.post(EVENTS, json=event())).status_code == 201
        writer = services(app).writer._connection
        assert writer is not None
        assert await writer.fetchval("SHOW synchronous_commit") == "on"
        assert await writer.fetchval("SHOW statement_timeout") == "29s"
    assert "synchronous_commit_overridden" in logs.getvalue()

"""CONSENT_DB_POOL_SIZE tells the truth: one API process opens at most that many connections for
requests, plus the event writer's own, however many requests run at once."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from service.app import create_app
from service.core.db_errors import DATABASE_UNAVAILABLE
from tests.conftest import CLIENT_IP, make_settings
from tests.factories import api_key, bearer, event, example, published
from tests.live import free_port

POOL_SIZE = 3


async def test_a_process_stays_within_its_pool_and_the_writers_connection(
    db_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await published(db_url, example("itsailor"))
    key = await api_key(db_url, "dsr:read")
    app = create_app(make_settings(db_url, tmp_path, db_pool_size=POOL_SIZE))
    seen: list[int] = []
    busy = True

    async def sample() -> None:
        while busy:
            seen.append(
                await db.fetchval(
                    # Client connections only: an autovacuum worker on this database is not
                    # the service's.
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND backend_type = 'client backend'"
                )
            )
            await asyncio.sleep(0.002)

    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        sampler = asyncio.create_task(sample())

        async def one(index: int) -> int:
            subject = uuid.uuid4()
            posted = await client.post(
                "/v1/properties/itsailor/consent-events", json=event(subject_id=subject)
            )
            state = await client.get(f"/v1/properties/itsailor/consents/{subject}")
            history = await client.post(
                "/v1/dsr/history", json={"subject_id": str(subject)}, headers=bearer(key)
            )
            versions = await client.get("/v1/properties/itsailor/schema/versions")
            return (
                posted.status_code + state.status_code + history.status_code + versions.status_code
            )

        statuses = await asyncio.gather(*(one(index) for index in range(60)))
        busy = False
        await sampler
    assert set(statuses) == {201 + 200 + 200 + 200}
    assert max(seen) > 1  # the sampler saw the load
    assert max(seen) <= POOL_SIZE + 1


async def test_a_connection_that_idled_is_pinged_and_replaced_when_its_server_dropped_it(
    db_url: str, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.core import db as database

    engine = database.create_engine(db_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            first = await connection.scalar(text("SELECT pg_backend_pid()"))
        # The server drops the pooled connection (a restart, a failover, an idle timeout) …
        assert await db.fetchval("SELECT pg_terminate_backend($1)", first)
        # … while it sat idle for longer than the ping threshold: the check-out pings, finds it
        # gone and hands out a new one, so the request never sees the dead connection.
        monkeypatch.setattr(database, "IDLE_PING_SECONDS", 0.0)
        async with engine.connect() as connection:
            second = await connection.scalar(text("SELECT pg_backend_pid()"))
        assert second != first
    finally:
        await engine.dispose()


async def test_a_connection_in_steady_use_is_not_pinged_and_reads_begin_no_transaction(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.core import db as database

    engine = database.create_engine(db_url, pool_size=1)
    pings: list[object] = []
    real_ping = engine.dialect.do_ping

    def counted(connection: Any) -> bool:
        pings.append(connection)
        return real_ping(connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    # Two statements in one transaction share its id; each alone has its own.
    xid = text("SELECT txid_current()")
    try:
        async with engine.connect() as connection:
            assert await connection.scalar(xid) == await connection.scalar(xid)
        for _ in range(3):
            async with database.autocommit(engine) as connection:
                assert await connection.scalar(xid) != await connection.scalar(xid)
        assert pings == []
        monkeypatch.setattr(database, "IDLE_PING_SECONDS", 0.0)
        async with database.autocommit(engine) as connection:
            await connection.scalar(xid)
        assert len(pings) == 1
    finally:
        await engine.dispose()


async def test_the_connection_returned_last_is_handed_out_first(db_url: str) -> None:
    """A quiet period's requests reuse one warm connection instead of cycling through the pool
    (each of which would pay its own first look at every partition, and a ping after idling)."""
    from service.core import db as database

    engine = database.create_engine(db_url, pool_size=POOL_SIZE)
    pid = text("SELECT pg_backend_pid()")
    try:
        held = [await engine.connect() for _ in range(POOL_SIZE)]
        pids = [await connection.scalar(pid) for connection in held]
        for connection in held:
            await connection.close()
        assert len(set(pids)) == POOL_SIZE
        for _ in range(2 * POOL_SIZE):
            async with database.autocommit(engine) as connection:
                assert await connection.scalar(pid) == pids[-1]
    finally:
        await engine.dispose()


async def test_waiting_requests_get_a_connection_in_arrival_order(db_url: str) -> None:
    """A connection given back while others wait goes to the one that waited longest, not to a
    request that asks for one right then (core/fair_pool.py): otherwise, under load, a few
    requests lose their turn again and again (a state GET's p99 was 20 times its p50)."""
    from service.core import db as database

    engine = database.create_engine(db_url, pool_size=1)
    order: list[str] = []

    async def borrow(name: str) -> None:
        async with engine.connect() as connection:
            order.append(name)
            await connection.scalar(text("SELECT 1"))

    try:
        first = await engine.connect()
        order.append("first")
        waiting = [asyncio.create_task(borrow(name)) for name in ("second", "third")]
        await asyncio.sleep(0.1)  # both wait for the pool's one connection
        assert order == ["first"]
        await first.close()
        await borrow("late")  # asks as the connection comes back, before the waiters run
        await asyncio.gather(*waiting)
        assert order == ["first", "second", "third", "late"]
    finally:
        await engine.dispose()


async def test_a_waiter_that_gives_up_passes_its_turn_on(db_url: str) -> None:
    """A request that stops waiting (its pool timeout, a client gone) holds no connection and
    leaves no gap: the next one in line gets the connection."""
    from service.core import db as database

    engine = database.create_engine(db_url, pool_size=1)

    async def take() -> AsyncConnection:
        return await engine.connect()

    try:
        first = await engine.connect()
        gone = asyncio.create_task(take())
        patient = asyncio.create_task(take())
        await asyncio.sleep(0.1)
        gone.cancel()
        await asyncio.sleep(0)
        await first.close()
        connection = await asyncio.wait_for(patient, 5)
        assert await connection.scalar(text("SELECT 1")) == 1
        await connection.close()
        assert gone.cancelled()
        assert engine.sync_engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def test_several_hosts_are_tried_in_order_by_the_pool_and_the_writer(
    db_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """libpq's host list (docs/scaling.md, "Failover"): the first host is down, the second is the
    database; requests and the event writer both reach it."""
    parsed = make_url(db_url)
    if not parsed.host:
        pytest.skip("the test server listens on a Unix socket only (no TCP host to list)")
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    listed = db_url.replace(
        f"@{parsed.host}:{parsed.port or 5432}/", f"@{dead},{parsed.host}:{parsed.port or 5432}/"
    )
    assert "," in listed
    listed += ("&" if "?" in listed else "?") + "target_session_attrs=read-write"
    await published(db_url, example("itsailor"))
    app = create_app(make_settings(listed, tmp_path))
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        subject = uuid.uuid4()
        posted = await client.post(
            "/v1/properties/itsailor/consent-events", json=event(subject_id=subject)
        )
        assert posted.status_code == 201, posted.text
        state = await client.get(f"/v1/properties/itsailor/consents/{subject}")
        assert state.json()["status"] != "none"
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 1


async def test_a_server_that_takes_no_writes_is_a_503_not_a_500(
    db_url: str, owner_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """A standby (here: a database whose transactions are read-only, SQLSTATE 25006 as on a hot
    standby), reached by a URL without target_session_attrs=read-write: nothing the client did."""
    await published(db_url, example("itsailor"))
    name = make_url(owner_url).database
    await db.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    app = create_app(make_settings(db_url, tmp_path))
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        posted = await client.post(
            "/v1/properties/itsailor/consent-events", json=event(subject_id=uuid.uuid4())
        )
        assert posted.status_code == 503, posted.text
        subject = uuid.uuid4()
        assert (await client.get(f"/v1/properties/itsailor/consents/{subject}")).status_code == 200


async def test_a_driver_connection_the_server_dropped_is_replaced_after_one_failure(
    db_url: str, db: asyncpg.Connection
) -> None:
    # The state GET's group read runs on the pooled connection's asyncpg connection
    # (core/db.driver_connection), beside SQLAlchemy's execution: a connection that died under it
    # must still leave the pool, or every later look-up would fail on it too.
    from service.core import db as database

    engine = database.create_engine(db_url, pool_size=1)
    try:
        async with database.driver_connection(engine) as driver:
            first = await driver.fetchval("SELECT pg_backend_pid()")
        assert await db.fetchval("SELECT pg_terminate_backend($1)", first)
        # In steady use (not idle long enough to be pinged) the dead connection is lent once and
        # its statement fails as a disconnect (a 503 for the request) …
        with pytest.raises(DATABASE_UNAVAILABLE):  # a 503 for the request
            async with database.driver_connection(engine) as driver:
                await driver.fetchval("SELECT 1")
        # … and the pool lends a new one after it.
        async with database.driver_connection(engine) as driver:
            second = await driver.fetchval("SELECT pg_backend_pid()")
            assert not driver.is_in_transaction()  # each statement on its own, as autocommit's
        assert second != first
    finally:
        await engine.dispose()


async def test_through_a_transaction_pooler_a_driver_connection_runs_in_a_transaction(
    db_url: str,
) -> None:
    from service.core import db as database

    engine = database.create_engine(db_url, pool_size=1, transaction_pooled=True)
    try:
        async with database.driver_connection(engine) as driver:
            assert driver.is_in_transaction()
            # One statement's parse and its run reach the same server connection.
            assert await driver.fetchval("SELECT txid_current()") == await driver.fetchval(
                "SELECT txid_current()"
            )
    finally:
        await engine.dispose()

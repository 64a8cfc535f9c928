"""The group read (service/ledger/decisions.py): concurrent state look-ups share one statement,
and each gets exactly the answer it would get alone."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import event as sa_event

from service.core.db import create_engine
from service.core.pipeline import ConsentAPI
from service.ledger.decisions import LatestDecisions, ReaderClosed
from service.state import of as services
from tests.factories import event, example, published

PROPERTIES = ("itsailor", "ailabrix")


class Statements(list[str]):
    """Every group read the app's pool runs from now on (other statements, such as the
    periodic tasks', are not counted). The look-up runs on the pooled connection's own asyncpg
    connection, so it is heard there: each connection the pool lends gets a query logger."""

    def __init__(self, app: ConsentAPI) -> None:
        super().__init__()
        self._grew = asyncio.Event()
        self._logged: set[int] = set()
        sa_event.listen(services(app).engine.sync_engine, "checkout", self._lent)

    def _lent(self, dbapi_connection: Any, *args: Any) -> None:
        driver = dbapi_connection.driver_connection
        if id(driver) not in self._logged:
            self._logged.add(id(driver))
            driver.add_query_logger(self._heard)

    def _heard(self, record: Any) -> None:
        if "consent_latest_decisions(" in record.query:
            self.append(record.query)
            self._grew.set()

    async def reach(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self) < count:
                self._grew.clear()
                await self._grew.wait()


async def waiting_on_the_lock(db: asyncpg.Connection, count: int) -> None:
    """Until `count` group reads are sent and wait in PostgreSQL (a query logger hears a statement
    only once it is done)."""
    async with asyncio.timeout(10):
        while True:
            await db.execute("SELECT pg_stat_clear_snapshot()")  # a fresh view in a transaction
            sent = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' "
                "AND query LIKE '%consent_latest_decisions(%'"
            )
            if sent >= count:
                return
            await asyncio.sleep(0.02)


def free_port() -> int:
    """A local port that was just free: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def alone(db: asyncpg.Connection, property_name: str, subject: uuid.UUID) -> Any:
    """The subject's latest decision, read the obvious way."""
    row = await db.fetchrow(
        "SELECT event_type, source, schema_version, choices, recorded_at FROM consent_events "
        "WHERE subject_id = $1 AND property = $2 AND event_type <> 're-prompt' "
        "ORDER BY seq DESC LIMIT 1",
        subject,
        property_name,
    )
    if row is None:
        return None
    event_type, source, schema_version, choices, recorded_at = row.values()
    return event_type, source, schema_version, json.loads(choices), recorded_at


async def test_concurrent_look_ups_share_one_statement_and_each_gets_its_own_answer(
    app: ConsentAPI, client: httpx.AsyncClient, db_url: str, db: asyncpg.Connection
) -> None:
    for name in PROPERTIES:
        await published(db_url, example(name))
    subjects = [uuid.uuid4() for _ in range(12)]
    # Decisions in each property, later ones overriding earlier ones, re-prompts (not
    # decisions) after some; a third of the subjects decide nothing in the second property.
    kinds = ("accept-all", "reject-all", "withdraw", "save-selection")
    for index, subject in enumerate(subjects):
        for name in PROPERTIES[: 1 if index % 3 == 0 else 2]:
            for step in range(1 + index % 3):
                kind = kinds[(index + step) % len(kinds)]
                extra: dict[str, Any] = (
                    {"categories": {"analytics": True}} if kind == "save-selection" else {}
                )
                body = event(kind, subject_id=subject, **extra)
                response = await client.post(f"/v1/properties/{name}/consent-events", json=body)
                assert response.status_code == 201, response.text
            if index % 4 == 1:
                body = event("re-prompt", subject_id=subject)
                response = await client.post(f"/v1/properties/{name}/consent-events", json=body)
                assert response.status_code == 201, response.text

    decisions = services(app).decisions
    statements = Statements(app)
    # Every subject in both properties, one of them asked three times, queued before the reader
    # runs: they are one batch.
    wanted = [(name, subject) for subject in subjects for name in PROPERTIES]
    wanted += [(PROPERTIES[0], subjects[0])] * 2
    answers = await asyncio.gather(*(decisions.latest(name, s) for name, s in wanted))
    assert len(statements) == 1

    for (name, subject), answer in zip(wanted, answers, strict=True):
        expected = await alone(db, name, subject)
        got = None if answer is None else (
            answer.event_type, answer.source, answer.schema_version, answer.choices,
            answer.recorded_at,
        )  # fmt: skip
        assert got == expected, (name, subject)
    assert sum(answer is None for answer in answers) == 4  # index 0, 3, 6, 9 in the second

    # Over HTTP, many concurrent requests still come to fewer statements than requests, and
    # each body is the one a request alone gets.
    statements.clear()
    urls = [f"/v1/properties/{name}/consents/{s}" for name, s in wanted]
    together = await asyncio.gather(*(client.get(url) for url in urls))
    assert len(statements) < len(urls)
    for url, response in zip(urls, together, strict=True):
        assert response.status_code == 200
        assert response.json() == (await client.get(url)).json()


async def test_a_failed_statement_fails_every_look_up_of_its_batch_and_the_next_batch_runs(
    db_url: str, app: ConsentAPI, client: httpx.AsyncClient
) -> None:
    await published(db_url, example("itsailor"))
    # A pool that cannot reach its server: nothing listens on the port.
    unreachable = create_engine(f"postgresql://nobody@127.0.0.1:{free_port()}/none", pool_size=1)
    reader = LatestDecisions(unreachable)
    reader.start()
    try:
        for _ in range(2):  # the reader goes on after a failure
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(reader.latest("itsailor", uuid.uuid4()) for _ in range(3)),
                    return_exceptions=True,
                ),
                timeout=30,
            )
            assert all(isinstance(result, Exception) for result in results), results
        # Over HTTP the same failure is a 503 problem: not a 500, not a hang.
        services(app).decisions = reader
        response = await client.get(f"/v1/properties/itsailor/consents/{uuid.uuid4()}")
    finally:
        await reader.close()
        await unreachable.dispose()
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    with pytest.raises(ReaderClosed):
        await reader.latest("itsailor", uuid.uuid4())


async def test_the_look_up_runs_on_a_plan_made_once(db: asyncpg.Connection) -> None:
    # Its prepared statement would be planned again on every call, about ten times the cost of
    # running it (migration 0017): the function keeps one generic plan per connection.
    config = await db.fetchval(
        "SELECT proconfig FROM pg_proc WHERE proname = 'consent_latest_decisions'"
    )
    assert "plan_cache_mode=force_generic_plan" in config


async def test_closing_answers_what_is_waiting(app: ConsentAPI) -> None:
    reader = LatestDecisions(services(app).engine)
    reader.start()
    waiting = [asyncio.create_task(reader.latest("itsailor", uuid.uuid4())) for _ in range(5)]
    await asyncio.sleep(0)  # queued
    await reader.close()
    assert [await task for task in waiting] == [None] * 5


async def test_a_look_up_does_not_wait_for_a_slow_statement_while_a_reader_is_free(
    app: ConsentAPI, db: asyncpg.Connection
) -> None:
    reader = LatestDecisions(services(app).engine, in_flight=2)
    reader.start()
    try:
        # The owner holds the event table: a statement reading it waits for the lock.
        async with db.transaction():
            await db.execute("LOCK TABLE consent_events IN ACCESS EXCLUSIVE MODE")
            first = asyncio.create_task(reader.latest("itsailor", uuid.uuid4()))
            await waiting_on_the_lock(db, 1)
            second = asyncio.create_task(reader.latest("itsailor", uuid.uuid4()))
            # The second look-up is not held behind the first: the other reader sends it.
            await waiting_on_the_lock(db, 2)
            assert not first.done()
            assert not second.done()
        assert (await first, await second) == (None, None)
    finally:
        await reader.close()

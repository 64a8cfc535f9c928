"""Group read: concurrent look-ups of subjects' latest decisions share one statement.

A banner asks for its subject's state on every page view, so this look-up is the service's most
frequent request. Made one at a time, each paid a pooled connection, SQLAlchemy's execution and a
round trip in the worker, and a statement's parse, snapshot and partition locks in PostgreSQL: far
more than the rest of the request (docs/architecture.md, "The two GETs"). As the event writer does
for inserts, `LatestDecisions` takes every look-up waiting, answers all of them with one
statement on one borrowed connection, and wakes each request with its own row; while statements
run, the next batch gathers. A single look-up is one statement, as before.

Each answer is read after its request arrived (its statement starts once the request is queued),
so a decision acknowledged before a look-up was asked for is always in it. If the statement fails,
every look-up in its batch fails with the same error (a 503), never silently.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime

import orjson
from prometheus_client import Histogram
from sqlalchemy.ext.asyncio import AsyncEngine

from service.core.db import driver_connection
from service.core.errors import ServiceUnavailable

MAX_BATCH = 500
# Statements running at once, each on its own pooled connection. One would batch the most, but a
# look-up that must read from disk (a large table, a cold cache) then waits for every other
# look-up's reads: a few in flight keep PostgreSQL's reads overlapping, and under load each still
# takes everything waiting when it is free.
IN_FLIGHT = 4

BATCH_LOOKUPS = Histogram(
    "consent_state_batch_lookups",
    "Subjects' state look-ups answered by one statement.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 500),
)

Key = tuple[str, uuid.UUID]  # (property, subject_id)


@dataclass(frozen=True, slots=True)
class Decision:
    """A subject's latest decision in a property (re-prompts are not decisions)."""

    event_type: str
    source: str
    schema_version: int
    choices: dict[str, bool]
    recorded_at: datetime
    gpc: bool = False  # the signals present when it was made
    dnt: bool = False


# The wanted keys travel as two arrays; the database's `consent_latest_decisions` (migration
# 0017) joins each to the same newest-decision index look-up a single subject's would make, on a
# plan it keeps per connection. A key without a decision has no row. Sent on the driver's
# connection: SQLAlchemy's execution and result processing cost the worker about as much again as
# the rest of a lone look-up (docs/architecture.md, "The group read").
LATEST_DECISIONS = (
    "SELECT property, subject_id, event_type, source, schema_version, choices, recorded_at,"
    " gpc, dnt FROM consent_latest_decisions($1::uuid[], $2::text[])"
)


class ReaderClosed(ServiceUnavailable):
    """The service is shutting down: the look-up was not made (a 503)."""


class LatestDecisions:
    """Answers `latest(property, subject)` in batches: up to `in_flight` statements at once, each
    on a connection borrowed from the process's pool."""

    def __init__(
        self, engine: AsyncEngine, *, max_batch: int = MAX_BATCH, in_flight: int = IN_FLIGHT
    ) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._in_flight = in_flight
        self._queue: list[tuple[Key, asyncio.Future[Decision | None]]] = []
        self._wakeup = asyncio.Event()
        self._readers: list[asyncio.Task[None]] = []
        self._closing = False

    def start(self) -> None:
        self._readers = [
            asyncio.create_task(self._run(), name=f"consent-state-reader-{number}")
            for number in range(self._in_flight)
        ]

    async def close(self) -> None:
        """Answer what is waiting, then stop."""
        self._closing = True
        self._wakeup.set()
        await asyncio.gather(*self._readers)

    async def latest(self, property_name: str, subject_id: uuid.UUID) -> Decision | None:
        """The subject's latest decision in the property, or None when it has made none."""
        if self._closing:
            raise ReaderClosed("the service is shutting down")
        done: asyncio.Future[Decision | None] = asyncio.get_running_loop().create_future()
        self._queue.append(((property_name, subject_id), done))
        self._wakeup.set()
        return await done

    async def _run(self) -> None:
        """One of the readers: each takes everything waiting when it is free."""
        while True:
            await self._wakeup.wait()
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                continue
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            if not self._queue and not self._closing:
                self._wakeup.clear()
            await self._answer(batch)

    async def _answer(self, batch: list[tuple[Key, asyncio.Future[Decision | None]]]) -> None:
        keys = list(dict.fromkeys(key for key, _ in batch))  # a subject asked twice: read once
        try:
            found = await self._read(keys)
        except Exception as exc:  # the database's error reaches every request (a 503)
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        BATCH_LOOKUPS.observe(len(keys))
        for key, done in batch:
            if not done.done():  # its request went away
                done.set_result(found.get(key))

    async def _read(self, keys: list[Key]) -> dict[Key, Decision]:
        properties = [property_name for property_name, _ in keys]
        subjects = [subject_id for _, subject_id in keys]
        async with driver_connection(self._engine) as connection:
            rows = await connection.fetch(LATEST_DECISIONS, subjects, properties)
        return {
            # asyncpg's UUID hashes and compares as the uuid.UUID a request asks with; `choices`
            # arrives as JSON text (SQLAlchemy's codec on the pooled connection leaves it so).
            (row["property"], row["subject_id"]): Decision(
                row["event_type"],
                row["source"],
                row["schema_version"],
                _choices(row["choices"]),
                row["recorded_at"],
                row["gpc"],
                row["dnt"],
            )
            for row in rows
        }


def _choices(value: str | dict[str, bool]) -> dict[str, bool]:
    parsed: dict[str, bool] = orjson.loads(value) if isinstance(value, str) else value
    return parsed

"""Group commit: concurrent events share one INSERT and one COMMIT.

Each request hands its row to the writer and waits. The writer takes everything waiting, inserts
it in one statement, commits, and only then wakes each request: a 2xx still means "this row is
committed" (SPEC §3.2), but a burst of N events costs one fsync instead of N. While a batch
commits, the next one gathers. If a batch fails, its rows are retried one by one, so one bad row
cannot fail its neighbours; a database outage fails every waiting request (503), never silently.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from service.core.logging import get_logger

log = get_logger("service.banner.writer")

MAX_BATCH = 500

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "uuid"),
    ("property", "text"),
    ("subject_id", "uuid"),
    ("event_type", "text"),
    ("schema_version", "int4"),
    ("choices", "jsonb"),
    ("effective", "jsonb"),
    ("gpc", "bool"),
    ("dnt", "bool"),
    ("signals_applied", "jsonb"),
    ("ip_hash", "text"),
    ("user_hash", "text"),
    ("hash_key_id", "text"),
    ("user_agent", "text"),
    ("page_url", "text"),
    ("tcf_string", "text"),
    ("gpp_string", "text"),
    ("request_hash", "text"),
    ("recorded_at", "timestamptz"),
)

# One array parameter per column: the statement is the same for any batch size, so it is prepared
# once per connection. (Built from the constant column list above, never from input.)
_NAMES = ", ".join(name for name, _ in _COLUMNS)
_ARRAYS = ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(_COLUMNS, 1))
INSERT_SQL = (
    f"INSERT INTO consent_events ({_NAMES}) SELECT * FROM unnest({_ARRAYS}) "  # noqa: S608
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)


@dataclass(slots=True)
class NewEvent:
    """A row of consent_events, in insert order; JSON columns already serialised."""

    event_id: uuid.UUID
    property: str
    subject_id: uuid.UUID
    event_type: str
    schema_version: int
    choices: dict[str, bool]
    effective: dict[str, bool]
    gpc: bool
    dnt: bool
    signals_applied: list[str]
    ip_hash: str | None
    user_hash: str | None
    hash_key_id: str | None
    user_agent: str | None
    page_url: str | None
    tcf_string: str | None
    gpp_string: str | None
    request_hash: str
    recorded_at: datetime
    done: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def values(self) -> tuple[Any, ...]:
        return (
            self.event_id,
            self.property,
            self.subject_id,
            self.event_type,
            self.schema_version,
            json.dumps(self.choices),
            json.dumps(self.effective),
            self.gpc,
            self.dnt,
            json.dumps(self.signals_applied),
            self.ip_hash,
            self.user_hash,
            self.hash_key_id,
            self.user_agent,
            self.page_url,
            self.tcf_string,
            self.gpp_string,
            self.request_hash,
            self.recorded_at,
        )


class WriterClosed(RuntimeError):
    pass


class EventWriter:
    """Owns one database connection of its own (asyncpg, no pool, no ORM: this is the hot path),
    so a burst of requests can never starve it of a connection."""

    def __init__(self, dsn: str, *, max_batch: int = MAX_BATCH) -> None:
        self._dsn = dsn
        self._connection: asyncpg.Connection | None = None
        self._max_batch = max_batch
        self._queue: list[NewEvent] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="consent-event-writer")

    async def close(self) -> None:
        """Commit what is waiting, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def write(self, event: NewEvent) -> bool:
        """Insert and commit `event`; True if new, False if its event_id was already stored."""
        if self._closing:
            raise WriterClosed("the service is shutting down")
        self._queue.append(event)
        self._wakeup.set()
        return await event.done

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._flush(batch)
            if self._closing:
                return

    async def _flush(self, batch: list[NewEvent]) -> None:
        try:
            inserted = await self._insert(batch)
        except Exception as exc:
            log.warning("event_batch_failed", size=len(batch), error=type(exc).__name__)
            if len(batch) > 1 and _row_error(exc):
                for event in batch:  # find the row at fault; the others still land
                    await self._flush([event])
            else:
                for event in batch:
                    _settle(event, exc=exc)
            return
        for event in batch:
            # The same event_id twice in one batch is stored once: the first is the new one.
            _settle(event, inserted=event.event_id in inserted)
            inserted.discard(event.event_id)

    async def _insert(self, batch: list[NewEvent]) -> set[uuid.UUID]:
        columns = list(zip(*(event.values() for event in batch), strict=True))
        connection = self._connection
        if connection is None or connection.is_closed():
            connection = self._connection = await asyncpg.connect(
                self._dsn,
                server_settings={"application_name": "consent-service-writer"},
                command_timeout=30,
                timeout=5,
            )
        try:
            async with connection.transaction():
                rows = await connection.fetch(INSERT_SQL, *columns)
        except (OSError, asyncpg.exceptions.InterfaceError, asyncpg.PostgresConnectionError):
            # The connection is gone (restart, failover): the next batch opens a new one.
            self._connection = None
            connection.terminate()
            raise
        return {row["event_id"] for row in rows}


def _row_error(exc: BaseException) -> bool:
    """An error caused by a row's data (SQLSTATE class 22 or 23), not by the database being away."""
    return isinstance(
        exc, asyncpg.exceptions.DataError | asyncpg.exceptions.IntegrityConstraintViolationError
    )


def _settle(event: NewEvent, *, inserted: bool = False, exc: BaseException | None = None) -> None:
    if event.done.done():  # its request went away; the row is committed (or not) regardless
        return
    if exc is not None:
        event.done.set_exception(exc)
    else:
        event.done.set_result(inserted)

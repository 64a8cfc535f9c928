"""Group commit: concurrent events share one INSERT and one COMMIT.

Each request hands its row to the writer and waits. The writer takes everything waiting, inserts
it in one statement, commits, and only then wakes each request: a 2xx still means "this row is
committed" (docs/guarantees.md, "Acknowledged means committed"), but a burst of N events costs
one fsync instead of N. While a batch commits, the next one gathers. If a batch fails, its rows
are retried one by one, so one bad row cannot fail its neighbours; a database outage fails every
waiting request (503), never silently.
"""

from __future__ import annotations

import asyncio
import operator
import time
import uuid
from dataclasses import dataclass

import asyncpg
import orjson
from prometheus_client import Histogram

from service.core.errors import ServiceUnavailable
from service.core.logging import get_logger
from service.ledger.event import WRITTEN_COLUMNS, NewEvent
from service.ledger.receipts import Proof, ReceiptSigner

log = get_logger("service.ledger.writer")

BATCH_ROWS = Histogram(
    "consent_event_batch_rows",
    "Events per group commit.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 500),
)
BATCH_SECONDS = Histogram(
    "consent_event_batch_seconds",
    "Time to insert and commit one batch of events.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)

MAX_BATCH = 500
FIRST_RECONNECT_DELAY = 0.25
MAX_RECONNECT_DELAY = 5.0

# The batch travels as one JSON array of rows, each an array of NewEvent's values in its field
# order (migration 0027: PostgreSQL reads them by position, without parsing every row's keys):
# serialising it (orjson, in C) costs a few microseconds a row where encoding one typed array per
# column cost about thirty, and the statement is the same for any batch size, so it is prepared
# once per connection. A single statement is atomic on its own: no BEGIN/COMMIT round trips
# around it. The hashes travel as hex. The statement is the database's
# `consent_record_events` (migration 0016), the only way the service's role can store an event:
# it inserts each id into consent_event_ids first and stores only the events whose id was new,
# which keeps ids unique across the table's monthly partitions, and stores the batch's signed
# receipt, which each event names (docs/evidence.md, "Receipts"). It returns the stored ids.


def record_sql(batch: str, jws: str, leaves: str) -> str:
    """The call of `consent_record_events` with the given placeholders ($1 for asyncpg, :name
    for SQLAlchemy's text())."""
    return (
        "SELECT event_id FROM consent_record_events("  # noqa: S608 (placeholders only)
        f"CAST({batch} AS jsonb), CAST({jws} AS text), CAST({leaves} AS bytea)) AS event_id"
    )


RECORD_SQL = record_sql("$1", "$2", "$3")


def _bytea(value: object) -> str:
    """bytes as PostgreSQL's bytea input (hex)."""
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    raise TypeError(type(value).__name__)


_ROW = operator.attrgetter(*WRITTEN_COLUMNS)


def batch_json(batch: list[NewEvent]) -> str:
    """The rows of `batch` as one JSON array of arrays, each NewEvent's values in field order."""
    return orjson.dumps([_ROW(event) for event in batch], default=_bytea).decode()


@dataclass(frozen=True, slots=True)
class Written:
    """What became of an event: stored now (with its batch's receipt and its proof), or stored
    already (its event_id was known)."""

    created: bool
    receipt: str | None = None
    proof: Proof | None = None


ALREADY_STORED = Written(created=False)


@dataclass(slots=True)
class _Pending:
    event: NewEvent
    done: asyncio.Future[Written]


class WriterClosed(ServiceUnavailable):
    """The service is shutting down: the event was not taken (a 503; the banner sends it again)."""


class DatabaseUnavailable(ConnectionError):
    """Nothing was sent: the database is known to be unreachable (a 503, nothing stored)."""


class CommitUnconfirmed(ConnectionError):
    """The statement was sent but no answer came back: its rows may or may not be committed."""


class ReplicationUnconfirmed(CommitUnconfirmed):
    """The commit was answered with a warning: with a synchronous standby, PostgreSQL reports a
    commit whose wait for the standby was cancelled as a success plus a WARNING ("committed
    locally, but might not have been replicated"). Such rows may vanish in a failover, so they
    are not acknowledged (docs/scaling.md, "Failover")."""


class EventWriter:
    """Owns one database connection of its own (asyncpg, no pool, no ORM: this is the hot path),
    so a burst of requests can never starve it of a connection."""

    def __init__(
        self,
        dsn: str,
        *,
        receipts: ReceiptSigner | None = None,
        max_batch: int = MAX_BATCH,
        command_timeout: float = 30.0,
        transaction_pooled: bool = False,
    ) -> None:
        self._dsn = dsn
        self._transaction_pooled = transaction_pooled
        self._warnings: list[str] = []
        self.receipts = receipts
        self._command_timeout = command_timeout
        # The server gives up on the statement (and rolls it back) a moment before this process
        # stops waiting for it. Otherwise a statement held up longer than the client waits, on a
        # lock or a busy server, went on after the connection was dropped and committed later,
        # with a `seq` after decisions acknowledged meanwhile: a withdrawal answered 201 was
        # undone by the acceptance answered 503 before it (docs/guarantees.md, "Acknowledged
        # means committed").
        # (At least 1 ms: 0 would mean no timeout at all.)
        self._statement_timeout_ms = max(
            1, int(max(command_timeout - 1, command_timeout / 2) * 1000)
        )
        # Each batch's own SETs, in a transaction pooler's transaction (see `_insert`).
        self._local_settings = ""
        self._reconnect_delay = FIRST_RECONNECT_DELAY / 2
        self._retry_at = 0.0
        self._connection: asyncpg.Connection | None = None
        self._max_batch = max_batch
        self._queue: list[_Pending] = []
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

    async def write(self, event: NewEvent) -> Written:
        """Insert and commit `event`: created, with its receipt, or its event_id stored already."""
        if self._closing:
            raise WriterClosed("the service is shutting down")
        done: asyncio.Future[Written] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(event, done))
        self._wakeup.set()
        return await done

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

    async def _flush(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        events = [pending.event for pending in batch]
        signed = self._sign(events)
        try:
            inserted = await self._insert(events, signed)
        except Exception as exc:
            log.warning("event_batch_failed", size=len(batch), error=type(exc).__name__)
            if len(batch) > 1 and _row_error(exc):
                for pending in batch:  # find the row at fault; the others still land
                    await self._flush([pending])
            else:
                for pending in batch:
                    _settle(pending.done, exc=exc)
            return
        BATCH_SECONDS.observe(time.perf_counter() - started)
        BATCH_ROWS.observe(len(batch))
        for index, pending in enumerate(batch):
            # The same event_id twice in one batch is stored once: the first is the new one.
            event_id = pending.event.event_id
            if event_id not in inserted:
                _settle(pending.done, written=ALREADY_STORED)
                continue
            inserted.discard(event_id)
            if signed is None:
                _settle(pending.done, written=Written(created=True))
            else:
                receipt, proofs = signed
                written = Written(created=True, receipt=receipt, proof=proofs[index])
                _settle(pending.done, written=written)

    def _sign(self, events: list[NewEvent]) -> tuple[str, list[Proof]] | None:
        """One signature over every leaf of the batch (docs/evidence.md, "Receipts"), or None:
        receipts are off, or signing failed (the events are stored and answered without one)."""
        if self.receipts is None:
            return None
        try:
            return self.receipts.sign_batch(
                [event.leaf for event in events], [event.salt for event in events]
            )
        except Exception as exc:
            log.error("receipt_signing_failed", size=len(events), error=type(exc).__name__)
            return None

    async def _insert(
        self, batch: list[NewEvent], signed: tuple[str, list[Proof]] | None
    ) -> set[uuid.UUID]:
        document = batch_json(_first_of_each_id(batch))
        receipt, leaves = (
            (None, None) if signed is None else (signed[0], b"".join(event.leaf for event in batch))
        )
        connection = await self._connected()
        self._warnings.clear()
        try:
            if self._transaction_pooled:
                # A pooler lends a server per transaction: parse and run in the same one, with
                # the settings a session would have had from the start (`_connected`).
                async with connection.transaction():
                    await connection.execute(self._local_settings)
                    rows = await connection.fetch(RECORD_SQL, document, receipt, leaves)
            else:
                rows = await connection.fetch(RECORD_SQL, document, receipt, leaves)
        except (
            TimeoutError,
            OSError,
            asyncpg.exceptions.InterfaceError,
            asyncpg.InternalClientError,
            asyncpg.PostgresConnectionError,
        ) as exc:
            # The statement was sent and no answer came: it may have committed or not
            # (docs/guarantees.md, "Acknowledged means committed"). The connection is dropped;
            # the next batch opens a new one.
            self._connection = None
            connection.terminate()
            raise CommitUnconfirmed(type(exc).__name__) from exc
        if self._warnings:
            # The statement raises none of its own: a warning here is the server's word that
            # the commit is not what it should be (a cancelled synchronous-replication wait).
            log.error("event_batch_commit_warned", size=len(batch), warnings=self._warnings[:3])
            raise ReplicationUnconfirmed(self._warnings[0])
        return {row["event_id"] for row in rows}

    def _heard(self, connection: object, message: asyncpg.PostgresLogMessage) -> None:
        """asyncpg calls this (before the statement's own result reaches `_insert`) for each
        notice the server sends on the writer's connection."""
        # severity_en: the English name whatever the server's lc_messages (PostgreSQL 9.6+).
        if (message.severity_en or message.severity) == "WARNING":
            self._warnings.append(f"{message.message} ({message.detail})")

    async def _connected(self) -> asyncpg.Connection:
        """The writer's connection, opened if need be. After a failed attempt the next is not
        made before a delay that doubles up to MAX_RECONNECT_DELAY: a database coming back is
        not met by every waiting request at once."""
        connection = self._connection
        if connection is not None and not connection.is_closed():
            return connection
        if time.monotonic() < self._retry_at:
            raise DatabaseUnavailable("the database could not be reached a moment ago")
        try:
            connection = await asyncpg.connect(
                self._dsn,
                # PgBouncer refuses other startup parameters, in session mode too (`_durable`).
                server_settings={"application_name": "consent-service-writer"},
                command_timeout=self._command_timeout,
                timeout=5,
                # Through a transaction pooler no named statement may outlive its transaction.
                statement_cache_size=0 if self._transaction_pooled else 100,
            )
            try:
                connection.add_log_listener(self._heard)
                await self._durable(connection)
            except BaseException:
                connection.terminate()
                raise
        except Exception:
            self._reconnect_delay = min(self._reconnect_delay * 2, MAX_RECONNECT_DELAY)
            self._retry_at = time.monotonic() + self._reconnect_delay
            raise
        self._reconnect_delay = FIRST_RECONNECT_DELAY / 2
        self._retry_at = 0.0
        self._connection = connection
        return connection

    async def _durable(self, connection: asyncpg.Connection) -> None:
        """The statement timeout, and a commit that has reached the disk (and a synchronous
        standby, where there is one) whatever the database or role says: with
        `synchronous_commit = off` a 201 could be lost in a crash, with `local` in a failover. A
        setting that waits longer (`remote_apply`) is kept. Set once for the session, or behind a
        transaction pooler in each batch's transaction."""
        settings = [f"statement_timeout = {self._statement_timeout_ms}"]
        committing = await connection.fetchval("SELECT current_setting('synchronous_commit')")
        if committing in ("off", "local"):
            log.warning(
                "synchronous_commit_overridden", was=committing, hint="the writer commits with on"
            )
            settings.append("synchronous_commit = on")
        if self._transaction_pooled:
            self._local_settings = "; ".join(f"SET LOCAL {setting}" for setting in settings)
        else:
            await connection.execute("; ".join(f"SET {setting}" for setting in settings))


def _first_of_each_id(batch: list[NewEvent]) -> list[NewEvent]:
    """The same event_id twice in one batch is stored once: the first is the new one (the ids
    insert would take it once, but the events insert would take both rows)."""
    ids = {event.event_id for event in batch}
    if len(ids) == len(batch):
        return batch
    first: list[NewEvent] = []
    for event in batch:
        if event.event_id in ids:
            ids.discard(event.event_id)
            first.append(event)
    return first


def _row_error(exc: BaseException) -> bool:
    """An error caused by a row's data (SQLSTATE class 22 or 23, or a value the batch's JSON cannot
    carry), not by the database being away."""
    return isinstance(
        exc,
        asyncpg.exceptions.DataError
        | asyncpg.exceptions.IntegrityConstraintViolationError
        | orjson.JSONEncodeError,
    )


def _settle(
    done: asyncio.Future[Written],
    *,
    written: Written = ALREADY_STORED,
    exc: BaseException | None = None,
) -> None:
    if done.done():  # its request went away; the row is committed (or not) regardless
        return
    if exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(written)

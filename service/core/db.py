"""Database: the async engine (one pool per process) and the table metadata."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import LargeBinary, MetaData, event, exc, text
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from service.core.db_url import sync_dsn
from service.core.fair_pool import FairPool

# Stable constraint names, so migrations can refer to them and autogenerate stays quiet.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class HexDigest(TypeDecorator[str]):
    """A SHA-256 digest stored as its 32 bytes and shown as 64 hex characters (migration 0014)."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> bytes | None:
        return None if value is None else bytes.fromhex(value)

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> str | None:
        return None if value is None else bytes(value).hex()


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    application_name: str = "consent-service",
    command_timeout: float | None = 30.0,
    transaction_pooled: bool = False,
) -> AsyncEngine:
    """At most `pool_size` connections: a request that finds them all busy waits for one.

    A connection that sat idle for `IDLE_PING_SECONDS` is pinged before it is handed out; one in
    steady use is not (docs/architecture.md, "Connections").

    `transaction_pooled`: the URL is a pooler that lends a server connection per transaction
    (CONSENT_DB_POOL_MODE=transaction), so every statement is unnamed and runs in a transaction.
    """
    dsn = sync_dsn(url)
    adapted: dict[str, Any] = {}  # SQLAlchemy's adaptation of each connection
    cached: dict[str, Any] = {}
    if transaction_pooled:
        # asyncpg's own cache and SQLAlchemy's both keep named statements on a server connection
        # that the next transaction may not get; "" makes every one unnamed.
        adapted = {"prepared_statement_cache_size": 0, "prepared_statement_name_func": _unnamed}
        cached = {"statement_cache_size": 0}

    async def connect() -> asyncpg.Connection:
        connection: asyncpg.Connection = await asyncpg.connect(
            dsn,
            server_settings={"application_name": application_name},
            # Client-side (asyncpg cancels the statement): no start-up parameter a transaction
            # pooler would refuse.
            command_timeout=command_timeout,
            timeout=5,
            **cached,
        )
        return connection

    def creator() -> Any:
        # The URL goes to asyncpg as the writer's does (sync_dsn), not through SQLAlchemy's
        # query-to-keywords mapping, which takes no TLS file; wrapped as create_async_engine's
        # `async_creator` would, with the statement cache settings it cannot pass.
        return engine.sync_engine.dialect.loaded_dbapi.connect(async_creator_fn=connect, **adapted)

    engine = create_async_engine(
        # The dialect only: every connection parameter is the creator's.
        "postgresql+asyncpg://",
        creator=creator,
        # Requests waiting for a connection are served in arrival order (core/fair_pool.py).
        poolclass=FairPool,
        pool_size=pool_size,
        max_overflow=0,
        # The connection returned last is handed out first: one in steady use keeps its caches
        # (its first erasure over every month's partition costs ~19 ms, later ones <1 ms) and
        # is not pinged; the others idle (docs/architecture.md, "Connections").
        pool_use_lifo=True,
        pool_recycle=1800,
        # A statement's parameters are a person's identifiers: never in an error's text (logs).
        hide_parameters=True,
    )
    _ping_when_idle(engine)
    if transaction_pooled:
        _TRANSACTION_POOLED.add(engine.sync_engine)
    return engine


def _unnamed() -> str:
    return ""


# Engines whose URL is a transaction pooler: `autocommit` gives them a transaction after all.
_TRANSACTION_POOLED: weakref.WeakSet[Engine] = weakref.WeakSet()


# A connection back in the pool within this long is handed out again without a round trip.
IDLE_PING_SECONDS = 10.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    """SQLAlchemy's `pool_pre_ping` pings on every check-out: a round trip (about 0.25 ms here)
    before every request's statement. A connection that was in use a moment ago is as good as a
    ping says; one that idled may have outlived its server (a restart, a failover), so only that
    one is pinged, and replaced when the ping fails (the pool retries the check-out)."""
    dialect = engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _taken(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned = record.info.get("returned_at")
        if returned is None or time.monotonic() - returned < IDLE_PING_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise exc.DisconnectionError() from error
            raise


@asynccontextmanager
async def autocommit(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection whose statements are each a transaction of their own: no BEGIN before and no
    ROLLBACK or COMMIT after, two round trips fewer than `engine.connect()` or `engine.begin()`.
    For one look-up, or one statement that is atomic alone (docs/architecture.md,
    "Connections").

    Through a transaction pooler, a statement outside a transaction may be parsed on one server
    connection and run on another, so there it runs in one (docs/scaling.md, "PgBouncer")."""
    async with engine.connect() as connection:
        if engine.sync_engine in _TRANSACTION_POOLED:
            async with connection.begin():
                yield connection
        else:
            yield await connection.execution_options(isolation_level="AUTOCOMMIT")


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection's own asyncpg connection, for a hot look-up whose execution through
    SQLAlchemy would cost the worker more than the statement costs PostgreSQL (the state GET's
    group read: docs/architecture.md, "Connections"). Its statements run as `autocommit`'s do:
    each on its own, or in a transaction through a transaction pooler.

    The borrow is the pool's as usual (the idle ping, arrival order, last in first out); a
    failure that closed the connection invalidates it, so the pool opens a new one."""
    async with engine.connect() as connection:
        proxied = await connection.get_raw_connection()
        driver: asyncpg.Connection = proxied.driver_connection
        try:
            if engine.sync_engine in _TRANSACTION_POOLED:
                async with driver.transaction():
                    yield driver
            else:
                yield driver
        except BaseException:
            if driver.is_closed():
                await connection.invalidate()
            raise


ROLE_POWERS = text(
    """
    SELECT r.rolsuper AS superuser,
           EXISTS (SELECT 1 FROM pg_tables
                   WHERE tablename = 'consent_events' AND tableowner = current_user) AS owner,
           CASE WHEN to_regprocedure('consent_record_events(jsonb, text, bytea)') IS NOT NULL
                THEN has_function_privilege('consent_record_events(jsonb, text, bytea)',
                                            'EXECUTE')
           END AS records
    FROM pg_roles r WHERE r.rolname = current_user
    """
)


@dataclass(frozen=True, slots=True)
class RolePowers:
    """What the connected role may do that the service should not be able to (`excess`: be a
    superuser, or own the tables and so switch off the triggers that keep evidence
    append-only), and whether it may record events at all (None: not migrated yet)."""

    excess: list[str]
    records: bool | None


async def role_powers(engine: AsyncEngine) -> RolePowers:
    async with asyncio.timeout(5), engine.connect() as connection:
        row = (await connection.execute(ROLE_POWERS)).one()
    excess = [name for name, held in (("superuser", row.superuser), ("owner", row.owner)) if held]
    return RolePowers(excess=excess, records=row.records)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)

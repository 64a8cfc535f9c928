"""Database: the async engine (one pool per process) and the table metadata."""

from __future__ import annotations

import asyncio
import re
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from sqlalchemy import LargeBinary, MetaData, event, exc, text
from sqlalchemy.engine import URL, Dialect, Engine, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

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


def _hosts(url: str) -> tuple[str, list[str]]:
    """libpq's form for several servers, `postgresql://user@h1:5432,h2:5432/db`, tried in order
    (with `?target_session_attrs=read-write`, the first that takes writes: docs/scaling.md,
    "Failover"): the URL without its hosts, and the hosts, each with its port. One host: the URL
    as given and no list."""
    parts = urlsplit(url)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    if "," not in hostlist:
        return url, []
    hosts = [host if re.search(r":\d+$", host) else f"{host}:5432" for host in hostlist.split(",")]
    if not all(host.rsplit(":", 1)[0] for host in hosts):
        raise ValueError("a database URL's host list has an empty entry")
    return urlunsplit(parts._replace(netloc=userinfo + at)), hosts


# What a database URL's query may hold: the parameters both of the service's drivers take, as
# SQLAlchemy's pool hands its query to `asyncpg.connect` as keyword arguments and the event writer
# gives asyncpg the URL itself. For each, the values asyncpg takes (None: any value). libpq's
# others (`connect_timeout`, `application_name`, `sslrootcert`, …) are not among asyncpg's
# keyword arguments: SQLAlchemy's connect would fail on them with a traceback, so a URL is checked
# with the other settings (check_database_url).
URL_PARAMETERS: dict[str, tuple[str, ...] | None] = {
    "host": None,  # a Unix socket's folder (the embedded server's URL), or `h1:5432`, repeated
    "port": None,
    "user": None,
    "password": None,
    "passfile": None,
    # libpq's name, turned into asyncpg's `ssl` for the pool (async_url). asyncpg's own `?ssl=`
    # would reach the writer's connection as a server setting, which PostgreSQL refuses.
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "target_session_attrs": (
        "any", "primary", "standby", "prefer-standby", "read-write", "read-only"
    ),
    "krbsrvname": None,
    "gsslib": ("gssapi", "sspi"),
}  # fmt: skip
REPEATABLE = frozenset({"host", "port"})  # SQLAlchemy's form for several servers
FORM = "the form is postgresql://user:password@host:5432/database"


def check_database_url(url: str) -> None:
    """ValueError saying what in `url` the service cannot connect with: not PostgreSQL's form,
    a port that is not one, a query parameter its drivers do not both take or a value they
    cannot. The message never shows the password (nor any other part of the URL as written)."""
    try:
        single, _ = _hosts(url)
        parsed = _postgresql(single)
    except exc.ArgumentError:
        raise ValueError(f"not a URL; {FORM}") from None
    except ValueError as error:
        reason = str(error)
        if not reason.startswith(("not a PostgreSQL URL", "a database URL's host list")):
            # The parser's own words may quote the URL, password and all.
            reason = "the port is not a number" if "int()" in reason else "not a usable URL"
        raise ValueError(f"{reason}; {FORM}") from None
    ports: list[object] = [parsed.port, *_listed_ports(url), *_values(parsed.query.get("port"))]
    ports += [
        host.rpartition(":")[2]  # SQLAlchemy's `?host=h1:5432&host=h2:5432`
        for host in _values(parsed.query.get("host"))
        if ":" in host and not host.startswith("/")
    ]
    for port in ports:
        if port is None:
            continue
        if not str(port).isdigit():
            raise ValueError(f"a port is not a number; {FORM}")
        if not 1 <= int(str(port)) <= 65535:
            raise ValueError(f"port {port} is not a TCP port (1 to 65535)")
    for name, value in parsed.query.items():
        if name not in URL_PARAMETERS:
            raise ValueError(
                f"the query parameter {name!r} is not one the service's drivers both take "
                f"(they take {', '.join(URL_PARAMETERS)})"
            )
        allowed = URL_PARAMETERS[name]
        if isinstance(value, tuple) and name not in REPEATABLE:
            raise ValueError(f"{name} must be given once")
        if allowed is not None and value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}; not {value!r}")


def _listed_ports(url: str) -> list[str]:
    """The ports of libpq's host list as written (`h1:5432,[::1]:5433,h2`), before `_hosts`
    gives a host without one the default."""
    hostlist = urlsplit(url).netloc.rpartition("@")[2]
    if "," not in hostlist:
        return []
    ports = []
    for entry in hostlist.split(","):
        if entry.startswith("["):
            rest = entry.partition("]")[2]
            if rest.startswith(":"):
                ports.append(rest[1:])
        elif ":" in entry:
            ports.append(entry.rpartition(":")[2])
    return ports


def _values(value: str | tuple[str, ...] | None) -> list[str]:
    return [] if value is None else list(value) if isinstance(value, tuple) else [value]


def _postgresql(url: str) -> URL:
    parsed = make_url(url)
    if parsed.get_backend_name() not in {"postgresql", "postgres"}:
        raise ValueError(f"not a PostgreSQL URL: {parsed.render_as_string(hide_password=True)}")
    return parsed


def async_url(url: str) -> URL:
    """Accept the usual `postgresql://` form and drive it with asyncpg.

    `sslmode` (libpq's name) becomes asyncpg's `ssl`, so URLs copied from a provider work as given;
    several hosts become SQLAlchemy's `?host=h1:p1&host=h2:p2`.
    """
    single, hosts = _hosts(url)
    parsed = _postgresql(single).set(drivername="postgresql+asyncpg")
    query = dict(parsed.query)
    if "sslmode" in query:
        query["ssl"] = query.pop("sslmode")
    if hosts:
        query["host"] = tuple(hosts)
    return parsed.set(query=query)


def sync_dsn(url: str) -> str:
    """The same URL as plain `postgresql://` (libpq's query names and host list kept), for
    asyncpg.connect."""
    single, hosts = _hosts(url)
    rendered = (
        _postgresql(single).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    if not hosts:
        return rendered
    parts = urlsplit(rendered)
    return urlunsplit(parts._replace(netloc=parts.netloc + ",".join(hosts)))


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    application_name: str = "consent-service",
    command_timeout: float = 30.0,
    transaction_pooled: bool = False,
) -> AsyncEngine:
    """At most `pool_size` connections: a request that finds them all busy waits for one.

    A connection that sat idle for `IDLE_PING_SECONDS` is pinged before it is handed out; one in
    steady use is not (docs/architecture.md, "Connections").

    `transaction_pooled`: the URL is a pooler that lends a server connection per transaction
    (CONSENT_DB_POOL_MODE=transaction), so every statement is unnamed and runs in a transaction.
    """
    pooled: dict[str, object] = {}
    if transaction_pooled:
        pooled = {
            # asyncpg's own cache and SQLAlchemy's both keep named statements on a server
            # connection that the next transaction may not get; "" makes every one unnamed.
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": _unnamed,
        }
    engine = create_async_engine(
        async_url(url),
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
        connect_args={
            "server_settings": {"application_name": application_name},
            # Client-side (asyncpg cancels the statement): no start-up parameter a transaction
            # pooler would refuse.
            "command_timeout": command_timeout,
            "timeout": 5,
            **pooled,
        },
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
                   WHERE tablename = 'consent_events' AND tableowner = current_user) AS owner
    FROM pg_roles r WHERE r.rolname = current_user
    """
)


async def role_powers(engine: AsyncEngine) -> list[str]:
    """What the connected role may do that the service should not be able to: be a superuser,
    or own the tables (and so switch off the triggers that keep evidence append-only)."""
    async with asyncio.timeout(5), engine.connect() as connection:
        row = (await connection.execute(ROLE_POWERS)).one()
    return [name for name, held in (("superuser", row.superuser), ("owner", row.owner)) if held]


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)

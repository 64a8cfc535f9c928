"""Database: the async engine (one pool per process) and the table metadata."""

from __future__ import annotations

import asyncio
import os
import re
import time
import weakref
from collections.abc import AsyncIterator, Mapping
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


# What a database URL's query may hold: libpq's parameters that asyncpg takes. Both of the
# service's drivers hand the URL to asyncpg itself (sync_dsn: the event writer's connections, and
# SQLAlchemy's pool through its creator, create_engine), so a URL means the same to both. For
# each, the values asyncpg takes (None: any value). libpq's others (`connect_timeout`,
# `application_name`, …) asyncpg would send to the server as settings, which PostgreSQL refuses:
# a URL is checked with the other settings (check_database_url).
TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
URL_PARAMETERS: dict[str, tuple[str, ...] | None] = {
    "host": None,  # a Unix socket's folder (the embedded server's URL), or `h1:5432`, repeated
    "port": None,
    "user": None,
    "password": None,
    "passfile": None,
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    # Files: the server's CA (verify-ca, verify-full), a client certificate and its key, a CRL.
    "sslrootcert": None,
    "sslcert": None,
    "sslkey": None,
    "sslcrl": None,
    "sslpassword": None,  # the client key's passphrase
    "ssl_min_protocol_version": TLS_VERSIONS,
    "ssl_max_protocol_version": TLS_VERSIONS,
    "target_session_attrs": (
        "any", "primary", "standby", "prefer-standby", "read-write", "read-only"
    ),
    "krbsrvname": None,
    "gsslib": ("gssapi", "sspi"),
}  # fmt: skip
FILE_PARAMETERS = ("sslrootcert", "sslcert", "sslkey", "sslcrl")
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
    _check_tls_files(parsed.query)


def _check_tls_files(query: Mapping[str, str | tuple[str, ...]]) -> None:
    """The TLS files a URL names are there and readable, and a mode that verifies the server
    has its CA: asyncpg would find out only when it connects, with a traceback."""
    for name in FILE_PARAMETERS:
        path = query.get(name)
        if isinstance(path, str) and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            raise ValueError(f"{name} {path!r} is not a file the service can read")
    mode = query.get("sslmode") or os.environ.get("PGSSLMODE")
    if mode not in ("verify-ca", "verify-full") or query.get("sslrootcert"):
        return
    # Where asyncpg looks for the CA when the URL names none (libpq's places).
    fallback = os.environ.get("PGSSLROOTCERT") or os.path.expanduser("~/.postgresql/root.crt")
    if not os.path.isfile(fallback):
        raise ValueError(
            f"sslmode={mode} checks the server's certificate against its CA: name the CA's "
            "certificate file with sslrootcert=/path/to/ca.pem (or set PGSSLROOTCERT)"
        )


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
    """The URL as asyncpg.connect takes it, for both drivers (the event writer, and the pool
    through create_engine's creator): plain `postgresql://`, and, as in libpq, a query parameter
    wins over the URL's own part (asyncpg would take the part): `?user=`, `?password=`, `?host=`
    (the URL's hosts and port then go), `?port=` of one host. SQLAlchemy's several servers
    (`?host=h1:5432&host=h2:5432`) become libpq's one list, `?host=h1:5432,h2:5432` (asyncpg
    would keep only the last of a repeated parameter)."""
    single, hosts = _hosts(url)
    parsed = _postgresql(single).set(drivername="postgresql")
    query = {
        name: ",".join(value) if isinstance(value, tuple) else value
        for name, value in parsed.query.items()
    }
    if "user" in query:
        parsed = parsed._replace(username=query.pop("user"))
    if "password" in query:
        parsed = parsed._replace(password=query.pop("password"))
    if "host" in query:
        parsed, hosts = parsed._replace(host=None, port=None), []
    elif "port" in query and not hosts and query["port"].isdigit():
        parsed = parsed._replace(port=int(query.pop("port")))
    rendered = parsed.set(query=query).render_as_string(hide_password=False)
    if not hosts:
        return rendered
    parts = urlsplit(rendered)
    return urlunsplit(parts._replace(netloc=parts.netloc + ",".join(hosts)))


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

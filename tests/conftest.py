"""Test fixtures: a real PostgreSQL, migrated once, and a fresh database for every test.

The server is `CONSENT_TEST_DATABASE_URL` when set (any database on it serves as the maintenance
connection), else an embedded PostgreSQL started once for the session. Alembic migrates a template
database once; each test gets its own copy (`CREATE DATABASE … TEMPLATE`), dropped afterwards, so
tests can commit, run concurrently inside themselves and never see each other's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from alembic import command
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from service.app import create_app
from service.core.config import Environment, Settings
from service.core.db_url import sync_dsn
from service.core.embedded import EmbeddedPostgres
from service.core.logging import configure_logging
from service.core.migrations import alembic_config, upgrade_to_head
from service.core.pipeline import ConsentAPI

TEST_KEY = "test-key-3lz4AkU9yTxxYojKCbhudbOcMRwkS9UIT-D_G_I1"
# An Ed25519 seed (32 bytes, base64url) that signs the tests' receipts.
TEST_RECEIPT_KEY = "dGVzdC1yZWNlaXB0LWtleS0wMTIzNDU2Nzg5YWJjZGU"
# A documentation address (RFC 5737) used for nothing else: finding it anywhere is a leak.
CLIENT_IP = "203.0.113.77"


def database_url(server_url: str, name: str) -> str:
    return make_url(sync_dsn(server_url)).set(database=name).render_as_string(hide_password=False)


SERVER_VERSION = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    configured = os.environ.get("CONSENT_TEST_DATABASE_URL")
    if configured:
        _remember_version(request, configured, "CONSENT_TEST_DATABASE_URL")
        yield configured
        return
    with tempfile.TemporaryDirectory(prefix="consent-test-pg-") as folder:
        server = EmbeddedPostgres(Path(folder), delete_on_exit=True)
        _remember_version(request, server.url, "embedded")
        yield server.url
        server.stop()


def _remember_version(request: pytest.FixtureRequest, url: str, source: str) -> None:
    import asyncio

    async def version() -> str:
        connection = await asyncpg.connect(sync_dsn(url))
        try:
            return str(await connection.fetchval("SHOW server_version"))
        finally:
            await connection.close()

    request.config.stash[SERVER_VERSION] = f"PostgreSQL {asyncio.run(version())} ({source})"


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    if SERVER_VERSION in config.stash:
        terminalreporter.write_line(f"tests ran against {config.stash[SERVER_VERSION]}")


@pytest.fixture(scope="session")
def template_name(server_url: str) -> Iterator[str]:
    import asyncio

    name = f"consent_tpl_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    upgrade_to_head(database_url(server_url, name))
    # The tests move the service's clock by hand (tests/factories.py, Clock): the window of event
    # times the database takes (migration 0024) is opened for them. tests/ledger/test_event_time.py
    # checks the window on databases of its own.
    asyncio.run(_admin(database_url(server_url, name), OPEN_TIME_WINDOW))
    yield name
    asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


OPEN_TIME_WINDOW = "UPDATE consent_event_time_window SET tolerance = interval '100 years'"


async def _admin(server_url: str, statement: str) -> None:
    connection = await asyncpg.connect(sync_dsn(server_url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def database_at(server_url: str, revision: str) -> AsyncIterator[str]:
    """A new database migrated to `revision` (for a migration's own test), as its owner's URL;
    dropped afterwards."""
    name = f"consent_mig_{uuid.uuid4().hex[:10]}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    try:
        owner_url = database_url(server_url, name)
        await asyncio.to_thread(command.upgrade, alembic_config(owner_url), revision)
        yield owner_url
    finally:
        await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The role the service runs as in every test: a login member of `consent_api` that owns nothing,
# as in production (docs/guarantees.md, "Least privilege"). Roles belong to the whole server and
# this one is never dropped, so runs and servers can share it.
API_ROLE = "consent_test_api"


@pytest.fixture(scope="session")
def api_role(server_url: str, template_name: str) -> str:
    import asyncio

    asyncio.run(
        _admin(
            server_url,
            f"""
            DO $$ BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{API_ROLE}') THEN
                    CREATE ROLE {API_ROLE} LOGIN;
                END IF;
            END $$;
            GRANT consent_api TO {API_ROLE};
            """,
        )
    )
    return API_ROLE


@pytest.fixture
async def owner_url(server_url: str, template_name: str) -> AsyncIterator[str]:
    """A database of this test's own, migrated to head, as the role that owns its tables."""
    name = f"consent_t_{uuid.uuid4().hex[:12]}"
    await _admin(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
    yield database_url(server_url, name)
    await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(owner_url: str, api_role: str) -> str:
    """The same database as the service's own least-privileged role (`consent_api`)."""
    return make_url(owner_url).set(username=api_role, password=None).render_as_string()


def make_settings(db_url: str, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": Environment.DEV,
        "database_url": SecretStr(db_url),
        "ip_hash_salt": SecretStr(TEST_KEY),
        "receipt_key": SecretStr(TEST_RECEIPT_KEY),
        "data_dir": tmp_path / "data",
        "log_level": "INFO",
        # Tests roll the statistics up where they mean to (tests/stats/test_rollup.py).
        "seal_seconds": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[ConsentAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: ConsentAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 51234))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
async def db(owner_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the test's database as its owner, for checking what was stored."""
    connection = await asyncpg.connect(owner_url)
    yield connection
    await connection.close()


@pytest.fixture
def captured_logs(app: ConsentAPI) -> Iterator[io.StringIO]:
    """Every log line the app writes during the test, formatted exactly as in production."""
    stream = io.StringIO()
    configure_logging("DEBUG", stream)
    yield stream
    configure_logging("INFO")


@pytest.fixture
async def metrics_key(db_url: str) -> dict[str, str]:
    """Headers of a key that may read /metrics."""
    from tests.factories import api_key, bearer

    return bearer(await api_key(db_url, "metrics:read"))


@pytest.fixture
def captured_logs_factory() -> Iterator[Callable[[], io.StringIO]]:
    """Capture the log lines of an app built inside the test (its own logging setup runs first)."""

    def start() -> io.StringIO:
        stream = io.StringIO()
        configure_logging("DEBUG", stream)
        return stream

    yield start
    configure_logging("INFO")

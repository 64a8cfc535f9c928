"""The service through PgBouncer in transaction pooling mode (CONSENT_DB_POOL_MODE=transaction,
docs/scaling.md, "PgBouncer"): the banner's and the DSR team's key flows, with more client
connections than PgBouncer has server connections, so every transaction may get another one.

PgBouncer is Debian's `pgbouncer` (1.18 on bookworm: no prepared-statement support of its own).
The tests skip without it, unless CONSENT_REQUIRE_PGBOUNCER is set (CI sets it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from service.app import create_app
from tests.conftest import CLIENT_IP, make_settings
from tests.factories import api_key, bearer, event, example, published
from tests.live import free_port

SERVER_CONNECTIONS = 2  # PgBouncer's connections to PostgreSQL, shared by every client


def _binary() -> str:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if found:
        return found
    message = "PgBouncer absent (Debian: apt-get install pgbouncer)"
    if os.environ.get("CONSENT_REQUIRE_PGBOUNCER"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def bouncer_url(db_url: str, api_role: str) -> Iterator[str]:
    """The test's database as the API role, through a transaction-pooling PgBouncer."""
    with _bouncer(db_url, api_role, "transaction") as url:
        yield url


@pytest.fixture
def session_bouncer_url(db_url: str, api_role: str) -> Iterator[str]:
    """The same through a PgBouncer that lends a server for each client's session."""
    with _bouncer(db_url, api_role, "session", servers=10) as url:
        yield url


@contextlib.contextmanager
def _bouncer(
    db_url: str, api_role: str, pool_mode: str, servers: int = SERVER_CONNECTIONS
) -> Iterator[str]:
    """The test's database as the API role, through a PgBouncer of this test's own."""
    binary = _binary()
    server = make_url(db_url)
    if not server.host:
        pytest.skip("the test server listens on a Unix socket only; PgBouncer is tested over TCP")
    folder = Path(tempfile.mkdtemp(prefix="consent-pgbouncer-"))
    folder.chmod(0o755)  # PgBouncer refuses to run as root: it drops to `nobody` (-u)
    port = free_port()
    (folder / "users.txt").write_text(f'"{api_role}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{server.database} = host={server.host} port={server.port or 5432}"
        f" dbname={server.database}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        f"pool_mode = {pool_mode}\n"
        f"default_pool_size = {servers}\nmin_pool_size = 0\nreserve_pool_size = 0\n"
        "max_client_conn = 200\n"
    )
    for name in ("users.txt", "pgbouncer.ini"):
        (folder / name).chmod(0o644)
    command = [binary, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "nobody"]
    log = folder / "pgbouncer.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"PgBouncer did not start: {log.read_text()}")
                time.sleep(0.05)
        yield server.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def through_bouncer(
    bouncer_url: str, db_url: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    await published(db_url, example("itsailor"))
    settings = make_settings(bouncer_url, tmp_path, db_pool_mode="transaction", db_pool_size=6)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        yield client


async def test_banner_flows_through_a_transaction_pooler(
    through_bouncer: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    client = through_bouncer
    assert (await client.get("/readyz")).json()["status"] == "ok"
    schema = await client.get("/v1/properties/itsailor/schema")
    assert schema.status_code == 200
    subjects = [uuid.uuid4() for _ in range(40)]

    async def one(subject: uuid.UUID) -> tuple[int, int, int, str]:
        body = event(subject_id=subject, event_id=str(uuid.uuid4()))
        first = await client.post("/v1/properties/itsailor/consent-events", json=body)
        again = await client.post("/v1/properties/itsailor/consent-events", json=body)
        state = await client.get(f"/v1/properties/itsailor/consents/{subject}")
        assert again.json()["event_id"] == first.json()["event_id"]
        return first.status_code, again.status_code, state.status_code, state.json()["status"]

    # 40 subjects at once: the pool's 6 connections and the writer's share PgBouncer's 2.
    results = await asyncio.gather(*(one(subject) for subject in subjects))
    assert {result[:3] for result in results} == {(201, 200, 200)}
    assert {result[3] for result in results} == {"given"}
    assert await db.fetchval("SELECT count(*) FROM consent_events") == len(subjects)
    conflicting = event(subject_id=subjects[0], event_id=str(uuid.uuid4()))
    assert (
        await client.post("/v1/properties/itsailor/consent-events", json=conflicting)
    ).status_code == 201
    reused = {**conflicting, "event_type": "reject-all"}
    taken = await client.post("/v1/properties/itsailor/consent-events", json=reused)
    assert taken.status_code == 409, taken.text


async def test_dsr_flows_through_a_transaction_pooler(
    through_bouncer: httpx.AsyncClient, db_url: str, db: asyncpg.Connection
) -> None:
    client = through_bouncer
    read = bearer(await api_key(db_url, "dsr:read"))
    erase = bearer(await api_key(db_url, "dsr:erase"))
    audit = bearer(await api_key(db_url, "audit:read"))
    write = bearer(await api_key(db_url, "schemas:write"))
    subject = uuid.uuid4()
    for kind in ("accept-all", "reject-all", "accept-all", "withdraw", "accept-all"):
        posted = await client.post(
            "/v1/properties/itsailor/consent-events",
            json=event(kind, subject_id=subject, event_id=str(uuid.uuid4())),
        )
        assert posted.status_code == 201, posted.text

    async def page(cursor: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"subject_id": str(subject), "limit": 2}
        if cursor:
            body["cursor"] = cursor
        answer = await client.post("/v1/dsr/history", json=body, headers=read)
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    seen: list[str] = []
    cursor: str | None = None
    while True:
        found = await page(cursor)
        seen += [item["event_type"] for item in found["items"]]
        cursor = found["next_cursor"]
        if cursor is None:
            break
    assert seen == ["accept-all", "reject-all", "accept-all", "withdraw", "accept-all"]
    exported = await client.post("/v1/dsr/exports", json={"subject_id": str(subject)}, headers=read)
    assert exported.status_code == 200, exported.text
    assert exported.text.count(str(subject)) >= 5
    content = example("itsailor").model_dump(mode="json")
    content["categories"][0]["description"] += " (reworded)"
    publish = await client.post(
        "/v1/properties/itsailor/schema/versions", json={"content": content}, headers=write
    )
    assert publish.status_code == 201, publish.text
    erased = await client.post(
        "/v1/dsr/erasures", json={"subject_id": str(subject), "reference": "R-9"}, headers=erase
    )
    assert erased.status_code == 200, erased.text
    assert erased.json()["deleted"] == 5
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 0
    trail = await client.get("/v1/dsr/audit", headers=audit)
    assert [item["action"] for item in trail.json()["items"]].count("history") == 3


async def test_events_flow_through_a_session_pooler(
    session_bouncer_url: str, db_url: str, tmp_path: Path
) -> None:
    """A pooler in session mode needs no setting; it refuses any startup parameter but a few, so
    the writer sets its statement timeout and commit level once connected, not at the start."""
    await published(db_url, example("itsailor"))
    app = create_app(make_settings(session_bouncer_url, tmp_path, db_pool_size=2))
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
        assert state.json()["status"] == "given"


async def test_a_pooler_without_the_setting_is_a_503_naming_it_never_a_500(
    bouncer_url: str, db_url: str, tmp_path: Path, captured_logs_factory: Any
) -> None:
    """CONSENT_DB_POOL_MODE left at `session` behind a transaction pooler: statements prepared on
    one server connection are missing on the next one lent. Nothing the client did: 503s, and
    the log names the setting."""
    await published(db_url, example("itsailor"))
    app = create_app(make_settings(bouncer_url, tmp_path, db_pool_size=6))
    logs = captured_logs_factory()
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):

        async def one() -> set[int]:
            subject = uuid.uuid4()
            posted = await client.post(
                "/v1/properties/itsailor/consent-events",
                json=event(subject_id=subject, event_id=str(uuid.uuid4())),
            )
            state = await client.get(f"/v1/properties/itsailor/consents/{subject}")
            return {posted.status_code, state.status_code}

        statuses = set().union(*await asyncio.gather(*(one() for _ in range(40))))
    assert statuses <= {200, 201, 503}, statuses
    # 40 clients over 2 server connections: statements meet the wrong connection every time.
    assert 503 in statuses
    assert "CONSENT_DB_POOL_MODE=transaction" in logs.getvalue()


async def test_readyz_names_what_the_pooler_refuses(bouncer_url: str, tmp_path: Path) -> None:
    """PgBouncer answers a database or a login it does not know with 08P01 and a message of its
    own, where PostgreSQL says 3D000 or 28000: /readyz said "unreachable" for both."""
    url = make_url(bouncer_url)
    for wrong, reason in (
        (url.set(database="nosuchdb"), "does not exist"),
        (url.set(username="stranger"), "refuses this login"),
    ):
        settings = make_settings(
            wrong.render_as_string(hide_password=False), tmp_path, db_pool_mode="transaction"
        )
        app = create_app(settings)
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()["database"]) == (503, reason)

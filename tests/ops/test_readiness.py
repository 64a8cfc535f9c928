"""/readyz follows the database: 503 while it cannot be reached, 200 once it is back."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

import service.app
from service.app import create_app
from service.core.config import Environment
from service.core.db_url import sync_dsn
from service.core.migrations import head_revision, upgrade_to_head
from service.state import of as services
from tests.conftest import CLIENT_IP, _admin, database_url, make_settings
from tests.proxy import CuttableProxy


def _proxy_for(db_url: str) -> CuttableProxy:
    url = make_url(db_url)
    socket_dir = url.query.get("host")
    if isinstance(socket_dir, str) and socket_dir.startswith("/"):
        return CuttableProxy(
            host=None, port=0, unix_path=Path(socket_dir) / f".s.PGSQL.{url.port or 5432}"
        )
    return CuttableProxy(host=url.host or "127.0.0.1", port=url.port or 5432, unix_path=None)


async def test_readyz_is_503_while_the_database_is_unreachable(db_url: str, tmp_path: Path) -> None:
    proxy = _proxy_for(db_url)
    await proxy.start()
    url = make_url(db_url)
    via_proxy = url.set(host="127.0.0.1", port=proxy.port, query={}).render_as_string(
        hide_password=False
    )
    app = create_app(make_settings(via_proxy, tmp_path))
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        assert (await client.get("/readyz")).status_code == 200

        await proxy.cut()
        down = await client.get("/readyz")
        assert down.status_code == 503
        assert down.json()["database"] == "unreachable"
        assert (await client.get("/healthz")).status_code == 200  # the process itself is fine

        await proxy.restore()
        assert (await client.get("/readyz")).status_code == 200
    await proxy.cut()


async def test_readyz_is_503_when_migrations_are_behind_and_200_when_a_newer_release_ran_them(
    client: httpx.AsyncClient, owner_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Behind: run `migrate`. Ahead (the next release migrates before its replicas replace
    these): serve on, rather than every old replica leaving the load balancer at once; and
    `migrate` of this release says what happened in one line (docs/architecture.md,
    "Migrations")."""
    import asyncpg
    from typer.testing import CliRunner

    from service.cli import app as cli

    head = head_revision()
    assert head is not None
    earlier = f"{int(head) - 1:04d}"
    connection = await asyncpg.connect(owner_url)
    try:
        await connection.execute("UPDATE alembic_version SET version_num = $1", earlier)
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["migrations"] == f"at {earlier}, head is {head}"

        await connection.execute("UPDATE alembic_version SET version_num = '9999'")
        response = await client.get("/readyz")
        assert response.status_code == 200, response.text
        assert response.json()["migrations"] == f"at 9999, newer than this release's {head}"

        monkeypatch.chdir(tmp_path)
        env = {"CONSENT_DATABASE_URL": owner_url, "CONSENT_DATA_DIR": str(tmp_path)}
        result = await asyncio.to_thread(CliRunner().invoke, cli, ["migrate"], env=env)
        assert result.exit_code == 1
        assert result.stderr == (
            f"error: the database is at revision 9999, which a newer release made; this release "
            f"knows revisions up to {head}: run the newer release's `migrate` and `serve`, or "
            "restore a backup from before that release\n"
        )
    finally:
        await connection.close()


async def test_requests_get_503_while_the_database_is_unreachable(
    db_url: str, tmp_path: Path
) -> None:
    """Not a 500: the client did nothing wrong, nothing was stored, and a retry may succeed."""
    from tests.factories import event, example, published

    await published(db_url, example("itsailor"))
    proxy = _proxy_for(db_url)
    await proxy.start()
    via_proxy = (
        make_url(db_url)
        .set(host="127.0.0.1", port=proxy.port, query={})
        .render_as_string(hide_password=False)
    )
    app = create_app(make_settings(via_proxy, tmp_path))
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        subject = event()["subject_id"]
        assert (
            await client.post("/v1/properties/itsailor/consent-events", json=event())
        ).status_code == 201
        await proxy.cut()
        for response in (
            await client.post("/v1/properties/itsailor/consent-events", json=event()),
            await client.get(f"/v1/properties/itsailor/consents/{subject}"),
        ):
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["retry-after"] == "5"
        await proxy.restore()
        assert (
            await client.post("/v1/properties/itsailor/consent-events", json=event())
        ).status_code == 201
    await proxy.cut()


async def test_readyz_says_a_database_was_never_migrated(
    client: httpx.AsyncClient, owner_url: str
) -> None:
    import asyncpg

    connection = await asyncpg.connect(owner_url)
    try:
        await connection.execute("ALTER TABLE alembic_version RENAME TO alembic_version_aside")
    finally:
        await connection.close()
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "database": "ok",
        "migrations": f"not migrated, head is {head_revision()}",
    }


async def test_a_database_not_created_then_not_migrated_is_a_503_everywhere_until_it_is(
    server_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    captured_logs_factory: Callable[[], io.StringIO],
) -> None:
    """Production started before its database: up, 503 on every route (never a 500), and ready
    once the database is created and migrated, without a restart; the role it connects as is
    checked as soon as it can be."""
    from tests.factories import event, example, published

    monkeypatch.setattr(service.app, "ROLE_CHECK_INTERVAL_SECONDS", 0.05)
    name = f"consent_late_{uuid.uuid4().hex[:10]}"
    url = database_url(server_url, name)  # the server's superuser: too powerful, and warned of
    app = create_app(make_settings(url, tmp_path, env=Environment.PRODUCTION))
    logs = captured_logs_factory()
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
    subject = uuid.uuid4()
    key = {"Authorization": "Bearer csk_" + "x" * 43}

    async def every_route_is_503(migrations: str) -> None:
        for response in (
            await client.post("/v1/properties/itsailor/consent-events", json=event()),
            await client.get("/v1/properties/itsailor/schema"),
            await client.get(f"/v1/properties/itsailor/consents/{subject}"),
            await client.post("/v1/dsr/history", json={"subject_id": str(subject)}, headers=key),
        ):
            assert response.status_code == 503, (response.request.url, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["retry-after"] == "5"
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["migrations"] == migrations

    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            await every_route_is_503("unknown")
            await _admin(server_url, f'CREATE DATABASE "{name}"')
            await every_route_is_503(f"not migrated, head is {head_revision()}")
            await asyncio.to_thread(upgrade_to_head, url)
            await published(url, example("itsailor"))
            assert (await client.get("/readyz")).status_code == 200
            created = await client.post("/v1/properties/itsailor/consent-events", json=event())
            assert created.status_code == 201, created.text
            for _ in range(100):
                if "database_role_too_powerful" in logs.getvalue():
                    break
                await asyncio.sleep(0.05)
            assert "database_role_too_powerful" in logs.getvalue()
            assert logs.getvalue().count("database_role_not_checked") == 1
    finally:
        await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_requiring_least_privilege_refuses_to_start_before_the_role_can_be_checked(
    server_url: str, tmp_path: Path
) -> None:
    url = database_url(server_url, f"consent_absent_{uuid.uuid4().hex[:10]}")
    settings = make_settings(
        url, tmp_path, env=Environment.PRODUCTION, require_least_privilege=True
    )
    app = create_app(settings)
    with pytest.raises(RuntimeError, match="cannot be checked"):
        async with app.router.lifespan_context(app):
            pass


async def test_readyz_and_the_api_name_a_role_that_may_not_record_or_a_read_only_server(
    server_url: str, owner_url: str, tmp_path: Path
) -> None:
    """A login role never made a member of consent_api (README, Operations: the grant given by
    hand) answered 500 with a traceback, and /readyz said "unreachable" of a server that
    answered; a server that takes no writes (a standby, default_transaction_read_only) was
    ready while every consent event was a 503."""
    role = f"consent_weak_{uuid.uuid4().hex[:8]}"
    await _admin(server_url, f'CREATE ROLE "{role}" LOGIN')
    as_role = make_url(owner_url).set(username=role).render_as_string(hide_password=False)
    app = create_app(make_settings(as_role, tmp_path))
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1234))

    async def answers() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ready = await client.get("/readyz")
            stored = await client.post(
                "/v1/properties/itsailor/consent-events",
                json={"subject_id": str(uuid.uuid4()), "event_type": "accept-all",
                      "schema_version": 1},
            )  # fmt: skip
        return ready, stored

    try:
        async with app.router.lifespan_context(app):
            ready, stored = await answers()
            assert (ready.status_code, ready.json()["database"]) == (
                503, "refuses this role: GRANT consent_api TO it",
            )  # fmt: skip
            assert stored.status_code == 503, stored.text
            assert stored.headers["content-type"] == "application/problem+json"
            assert "refuses this service's role" in stored.json()["detail"]

            # It may read the revision but still not record: said so.
            await _admin(owner_url, f'GRANT SELECT ON alembic_version TO "{role}"')
            ready, _ = await answers()
            assert (ready.status_code, ready.json()) == (
                503,
                {
                    "status": "unavailable",
                    "database": "this role may not record events: GRANT consent_api TO it",
                    "migrations": "head",
                },
            )

            await _admin(owner_url, f'GRANT consent_api TO "{role}"')
            await _admin(server_url, f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
            await services(app).engine.dispose()  # new sessions read the role's setting
            ready, _ = await answers()
            assert (ready.status_code, ready.json()["database"]) == (
                503, "read-only: it takes no writes",
            )  # fmt: skip

            await _admin(server_url, f'ALTER ROLE "{role}" RESET default_transaction_read_only')
            await services(app).engine.dispose()
            ready, _ = await answers()
            assert ready.status_code == 200, ready.text
    finally:
        await _admin(owner_url, f'DROP OWNED BY "{role}"')
        await _admin(server_url, f'DROP ROLE IF EXISTS "{role}"')


async def test_a_guard_trigger_refusal_is_our_fault_not_a_missing_grant(
    client: httpx.AsyncClient, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evidence's guard triggers raise 42501 too, with messages of their own: the service
    asked for what the evidence forbids. That is a 500 (logged, and alerted on as a server
    error), never a 503 telling the operator to grant consent_api."""
    from service.dsr import routes, service
    from service.dsr.bodies import DsrAction
    from tests.factories import api_key, bearer

    recorded = service.record_audit

    async def as_an_erasure(*args: Any, **kwargs: Any) -> uuid.UUID:
        return await recorded(*args, **{**kwargs, "action": DsrAction.ERASURE})

    monkeypatch.setattr(routes, "record_audit", as_an_erasure)
    reader = bearer(await api_key(db_url, "dsr:read"))
    answer = await client.post(
        "/v1/dsr/exports", json={"subject_id": str(uuid.uuid4())}, headers=reader
    )
    assert answer.status_code == 500, answer.text
    assert answer.json()["type"].endswith("/internal-error")


async def _terminate_backends(server_url: str, name: str | None) -> None:
    """Ends every backend on `name` and waits until they have gone: pg_terminate_backend only
    signals, so a pooled connection could otherwise pass its ping and be closed mid-query."""
    admin = await asyncpg.connect(sync_dsn(server_url))
    try:
        for _ in range(200):
            left = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            if left == 0:
                return
            await asyncio.sleep(0.025)
        raise AssertionError(f"backends on {name} did not end")
    finally:
        await admin.close()


async def test_a_database_not_accepting_connections_is_a_503_not_a_500(
    client: httpx.AsyncClient, owner_url: str, server_url: str
) -> None:
    """`ALTER DATABASE … ALLOW_CONNECTIONS false` (maintenance): PostgreSQL's 55000 was a 500
    with a traceback; it is a database not ready, named in /readyz."""
    name = make_url(owner_url).database
    await _admin(server_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        await _terminate_backends(server_url, name)
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["database"] == "does not accept connections"
        state = await client.get(f"/v1/properties/itsailor/consents/{uuid.uuid4()}")
        assert state.status_code == 503, state.text
    finally:
        await _admin(server_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


async def test_a_pooled_connection_the_server_dropped_does_not_make_readyz_fail(
    client: httpx.AsyncClient, owner_url: str, server_url: str
) -> None:
    """A connection used a moment ago is not pinged (docs/architecture.md, "Connections"), so
    after a failover the probe's statement can meet a closed connection: the database itself is
    fine, and the probe asks again on a new connection rather than take the replica out."""
    assert (await client.get("/readyz")).status_code == 200
    await _terminate_backends(server_url, make_url(owner_url).database)
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["database"] == "ok"

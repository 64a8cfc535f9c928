"""/readyz follows the database: 503 while it cannot be reached, 200 once it is back."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from service.app import create_app
from service.core.migrations import head_revision
from tests.conftest import CLIENT_IP, make_settings
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


async def test_readyz_is_503_when_migrations_are_behind(
    client: httpx.AsyncClient, owner_url: str
) -> None:
    import asyncpg

    connection = await asyncpg.connect(owner_url)
    try:
        await connection.execute("UPDATE alembic_version SET version_num = 'older'")
    finally:
        await connection.close()
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert "older" in response.json()["migrations"]


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

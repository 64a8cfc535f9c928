"""The probes' answers are never cached, and a 503 from /readyz says when to look again, as the
API's own 503s do: a cached 200 would keep a load balancer sending to a process that is down, a
cached 503 would keep it away from one that is back."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import httpx

from service.app import create_app
from service.core.config import Environment
from service.core.errors import RETRY_AFTER
from tests.conftest import CLIENT_IP, database_url, make_settings


async def test_healthz_and_a_ready_readyz_are_not_cached(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz"):
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["cache-control"] == "no-store", path
        assert "retry-after" not in response.headers, path


async def test_readyz_503_behind_migrations_is_not_cached_and_says_when_to_retry(
    client: httpx.AsyncClient, owner_url: str
) -> None:
    connection = await asyncpg.connect(owner_url)
    try:
        # A revision this release knows, before its head.
        await connection.execute("UPDATE alembic_version SET version_num = '0001'")
    finally:
        await connection.close()
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["retry-after"] == RETRY_AFTER


async def test_readyz_503_for_a_missing_database_matches_the_api_503(
    server_url: str, tmp_path: Path
) -> None:
    """The reviewer's case: production pointed at a database that does not exist. /readyz and
    an API route both answer 503, both uncached, with the same Retry-After."""
    url = database_url(server_url, f"consent_absent_{uuid.uuid4().hex[:10]}")
    app = create_app(make_settings(url, tmp_path, env=Environment.PRODUCTION))
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        ready = await client.get("/readyz")
        api = await client.get("/v1/properties/itsailor/schema")
        live = await client.get("/healthz")
    assert (ready.status_code, api.status_code, live.status_code) == (503, 503, 200)
    assert ready.json() == {
        "status": "unavailable",
        "database": "does not exist",
        "migrations": "unknown",
    }
    for response in (ready, api):
        assert response.headers["cache-control"] == "no-store", response.request.url
    assert ready.headers["retry-after"] == api.headers["retry-after"] == RETRY_AFTER
    assert live.headers["cache-control"] == "no-store"

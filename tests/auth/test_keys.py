"""API keys: a created key works, a revoked one gets 401, one without the scope gets 403."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from tests.factories import api_key, bearer, example

PUBLISH = "/v1/properties/itsailor/schema/versions"


def body() -> dict[str, object]:
    return {"content": example("itsailor").model_dump(mode="json")}


async def test_a_created_key_with_the_scope_works_and_is_marked_used(
    client: httpx.AsyncClient, db_url: str, db: asyncpg.Connection
) -> None:
    key = await api_key(db_url, "schemas:write")
    assert await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key.id) is None
    response = await client.post(PUBLISH, json=body(), headers=bearer(key))
    assert response.status_code == 201
    assert await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key.id) is not None
    # Only a hash of the secret is stored.
    stored = await db.fetchval("SELECT secret_sha256 FROM api_keys WHERE id = $1", key.id)
    assert key.secret not in stored
    assert await db.fetchval("SELECT published_by FROM consent_schema_versions") == key.id


async def test_a_revoked_key_gets_401(client: httpx.AsyncClient, db_url: str) -> None:
    key = await api_key(db_url, "schemas:write", revoked=True)
    response = await client.post(PUBLISH, json=body(), headers=bearer(key))
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert "revoked" in response.json()["detail"]


async def test_a_key_without_the_scope_gets_403(client: httpx.AsyncClient, db_url: str) -> None:
    key = await api_key(db_url, "dsr:read", "audit:read")
    response = await client.post(PUBLISH, json=body(), headers=bearer(key))
    assert response.status_code == 403
    assert "schemas:write" in response.json()["detail"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer csk_not-a-real-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
    ],
    ids=["missing", "unknown", "wrong-scheme", "empty"],
)
async def test_missing_or_unknown_keys_get_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post(PUBLISH, json=body(), headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"

"""The DSR and statistics routes take only the query parameters they declare (core/query.py):
a mistyped filter is a 422 naming it, after the key is checked; the banner's public GETs let a
cache-buster through."""

from __future__ import annotations

import httpx

from tests.core.test_errors import assert_problem
from tests.factories import api_key, bearer, example, published


async def test_an_unknown_query_parameter_on_the_privacy_teams_routes_is_422(
    client: httpx.AsyncClient, db_url: str
) -> None:
    await published(db_url, example("itsailor"))
    key = await api_key(db_url, "audit:read", "stats:read")
    audit = await client.get("/v1/dsr/audit?action=erasure&limit=5", headers=bearer(key))
    body = assert_problem(audit, 422)
    assert body["detail"] == (
        "/query/action: not a query parameter of this endpoint (it takes cursor, limit)"
    )
    assert body["errors"] == [
        {"pointer": "/query/action", "detail": "not a query parameter of this endpoint (it takes "
         "cursor, limit)"}
    ]  # fmt: skip
    assert (await client.get("/v1/dsr/audit?limit=5", headers=bearer(key))).status_code == 200
    stats = await client.get("/v1/properties/itsailor/stats?sinse=2026-01-01", headers=bearer(key))
    assert str(assert_problem(stats, 422)["detail"]).startswith(
        "/query/sinse: not a query parameter of this endpoint (it takes "
    )
    # The key is checked first: without one, the answer says nothing of the parameters.
    assert_problem(await client.get("/v1/dsr/audit?action=erasure"), 401)


async def test_the_banners_public_gets_let_a_cache_buster_through(
    client: httpx.AsyncClient, db_url: str
) -> None:
    await published(db_url, example("itsailor"))
    schema = await client.get("/v1/properties/itsailor/schema?_=1700000000")
    assert schema.status_code == 200
    state = await client.get(
        "/v1/properties/itsailor/consents/0b9f6f7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b?_=1700000000"
    )
    assert state.status_code == 200

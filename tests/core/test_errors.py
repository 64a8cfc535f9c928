"""Every error is RFC 9457 problem+json; nothing a client sends produces a stack trace."""

from __future__ import annotations

import httpx

from service.core.pipeline import ConsentAPI
from tests.factories import api_key, bearer

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["cache-control"] == "no-store"  # an error is never cached
    body = response.json()
    assert body["status"] == status
    assert str(body["type"]).startswith("https://")
    assert body["title"]
    assert body["detail"]
    assert body["instance"] == f"urn:request:{response.headers['x-request-id']}"
    return dict(body)


async def test_unknown_route_is_a_404_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/nothing-here"), 404)


async def test_an_admin_routes_errors_are_not_cached_either(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/v1/dsr/history", json={"subject_id": "x"}), 401)
    assert_problem(await client.get("/v1/properties/nobody/stats"), 401)


async def test_wrong_method_is_a_405_problem(client: httpx.AsyncClient) -> None:
    response = await client.delete("/healthz")
    body = assert_problem(response, 405)
    assert response.headers["allow"] == "GET, HEAD"  # a GET route answers HEAD too
    assert body["detail"] == f"DELETE is not allowed here; allowed: {response.headers['allow']}"


async def test_an_unexpected_failure_is_a_500_problem_without_internals(
    app: ConsentAPI, client: httpx.AsyncClient
) -> None:
    @app.get("/boom-for-test")
    async def boom() -> None:
        raise RuntimeError("secret internal state /etc/passwd")

    # As a real server does: the app's own 500 reaches the client instead of re-raising in the test.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as raw:
        response = await raw.get("/boom-for-test")
    body = assert_problem(response, 500)
    assert "secret" not in response.text
    assert "Traceback" not in response.text
    assert "request id" in str(body["detail"])


async def test_validation_messages_are_the_services_words_not_pydantics(
    client: httpx.AsyncClient, db_url: str
) -> None:
    """No "Value error, " before a validator's sentence, no Python class for "not an object", and
    a pattern in words, not a regular expression."""
    events = "/v1/properties/itsailor/consent-events"
    body = assert_problem(await client.post(events, json=[]), 422)
    assert body["detail"] == "/body: must be a JSON object"
    body = assert_problem(await client.post(events, content=b"null"), 422)
    assert body["detail"] == "/body: must be a JSON object"
    subject = "0b9f6f7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    sent = {"subject_id": subject, "event_type": "accept-all", "schema_version": 1}
    body = assert_problem(await client.post(events, json=sent | {"page_url": "not a url"}), 422)
    assert body["detail"] == "/body/page_url: must be an absolute http(s) URL"
    body = assert_problem(await client.get("/v1/properties/Bad_Name/schema"), 422)
    assert body["detail"] == (
        "/path/property: must be 1 to 64 lower-case letters, digits and hyphens, beginning and "
        "ending with a letter or digit"
    )
    key = await api_key(db_url, "dsr:erase")
    body = assert_problem(await client.post("/v1/dsr/erasures", json={}, headers=bearer(key)), 422)
    assert body["detail"] == "/body: name exactly one identifier: subject_id, ip or user_id"
    assert "Value error" not in str(body)


async def test_a_busy_database_is_not_called_unreachable() -> None:
    """No pooled connection came free, or a statement ran past its timeout: the database is
    there and busy, which is what the 503 and /readyz say (an operator would look for an outage
    that is not one)."""
    import asyncpg
    import sqlalchemy.exc
    from starlette.requests import Request

    from service.core.db_errors import _database_unavailable, not_ready_reason

    request = Request({"type": "http", "headers": []})
    for exc, detail, reason in (
        (
            sqlalchemy.exc.TimeoutError("QueuePool limit of size 1 overflow 0 reached"),
            "every database connection of this process is busy",
            "busy: no connection of this process came free in time",
        ),
        (
            asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
            "the database did not finish in time",
            "busy: it did not answer in time",
        ),
        (ConnectionRefusedError(), "the database cannot be reached", "unreachable"),
    ):
        answer = await _database_unavailable(request, exc)
        assert answer.status_code == 503
        assert bytes(answer.body).decode().count(detail) == 1
        assert not_ready_reason(exc) == reason

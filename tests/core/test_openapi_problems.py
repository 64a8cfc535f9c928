"""The OpenAPI document describes the errors the app sends: every one an `application/problem+json`
`Problem` (never `application/json`, never FastAPI's `HTTPValidationError`), a 503 wherever the
database can be away, and the answers themselves match what is documented."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts
from pydantic import SecretStr

from service.app import create_app
from service.core.config import Settings
from service.core.errors import PROBLEM_BASE, PROBLEM_MEDIA_TYPE
from service.openapi import RENDER_URL, render_openapi
from service.state import Catalog, Decisions, Engine, Session
from tests.conftest import CLIENT_IP, database_url, make_settings
from tests.factories import api_key, bearer

PROBLEM = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
# /readyz answers its own body when not ready (its Readiness, application/json): a probe's
# answer, not a problem.
OWN_ERROR_BODIES = {("/readyz", "get", "503")}
# What a route depends on to reach the database (docs/architecture.md, "Collaborators"); a
# route that writes through the event writer reaches it through these too.
DATABASE = {get_args(alias)[1].dependency for alias in (Session, Engine, Catalog, Decisions)}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return dict(json.loads(render_openapi()))


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def test_every_error_is_documented_as_the_problem_the_app_sends(document: dict[str, Any]) -> None:
    errors = 0
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400 or (path, method, status) in OWN_ERROR_BODIES:
                continue
            errors += 1
            assert response.get("content") == PROBLEM, f"{method.upper()} {path} {status}"
            if status in ("429", "503"):
                assert "Retry-After" in response["headers"], f"{method.upper()} {path} {status}"
    assert errors > 50  # the walk saw the document's errors


def test_no_validation_error_of_fastapi_is_documented(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in json.dumps(document)
    assert "ValidationError" not in document["components"]["schemas"]
    client = document["paths"]["/client/{version}/{name}"]["get"]["responses"]
    assert client["422"]["content"] == PROBLEM


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    text = json.dumps(document)
    references = {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}
    assert {"Problem", "InvalidParam"} <= references
    assert references <= set(document["components"]["schemas"])


def _calls(dependant: Dependant) -> set[Any]:
    return {dependant.call} | {call for sub in dependant.dependencies for call in _calls(sub)}


def test_every_route_that_uses_the_database_documents_503(document: dict[str, Any]) -> None:
    app = create_app(Settings.model_construct(database_url=SecretStr(RENDER_URL)))
    using = [
        route
        for route in iter_route_contexts(app.routes)
        if getattr(route, "include_in_schema", False) and _calls(route.dependant) & DATABASE
    ]
    assert len(using) > 10  # the walk found them
    for route in using:
        for method in route.methods or ():
            responses = document["paths"][route.path_format][method.lower()]["responses"]
            assert "503" in responses, f"{method} {route.path_format} does not document its 503"


def conforms(value: Any, schema: dict[str, Any], document: dict[str, Any]) -> bool:
    """Whether `value` matches `schema` (the keywords the document's schemas use here)."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        return conforms(value, document["components"]["schemas"][name], document)
    if "anyOf" in schema:
        return any(conforms(value, option, document) for option in schema["anyOf"])
    types = {"object": dict, "array": list, "string": str, "integer": int, "null": type(None)}
    kind = schema.get("type")
    if kind is not None and (not isinstance(value, types[kind]) or isinstance(value, bool)):
        return False
    if kind == "object":
        properties = schema.get("properties", {})
        return all(name in value for name in schema.get("required", ())) and all(
            conforms(value[name], properties[name], document)
            for name in properties
            if name in value
        )
    if kind == "array":
        return all(conforms(item, schema.get("items", {}), document) for item in value)
    return True


def test_the_check_of_a_problem_refuses_what_is_not_one(document: dict[str, Any]) -> None:
    problem = {"type": PROBLEM_BASE + "not-found", "title": "Not found", "status": 404}
    schema = {"$ref": "#/components/schemas/Problem"}
    assert conforms({**problem, "detail": "no such thing"}, schema, document)
    assert not conforms(problem, schema, document)  # no detail
    assert not conforms({**problem, "detail": "x", "status": "404"}, schema, document)
    assert not conforms({**problem, "detail": "x", "errors": [{"detail": "x"}]}, schema, document)


def assert_documented(document: dict[str, Any], answer: httpx.Response, path: str) -> None:
    """The GET's answer is one its operation documents: status, media type, schema, headers."""
    where = f"GET {path} {answer.status_code}: {answer.text}"
    response = document["paths"][path]["get"]["responses"].get(str(answer.status_code))
    assert response is not None, where
    assert answer.headers["content-type"] == PROBLEM_MEDIA_TYPE, where
    assert conforms(answer.json(), response["content"][PROBLEM_MEDIA_TYPE]["schema"], document)
    for header in response.get("headers", {}):
        assert header in answer.headers, where


async def test_errors_of_a_hot_route_are_as_documented(
    document: dict[str, Any], client: httpx.AsyncClient
) -> None:
    path = "/client/{version}/{name}"
    missing = await client.get("/client/1.0.1/nothing.js")
    assert missing.status_code == 404
    assert_documented(document, missing, path)
    too_long = await client.get(f"/client/1.0.1/{'a' * 70}")
    assert too_long.status_code == 422
    assert_documented(document, too_long, path)
    assert too_long.json()["errors"]  # the documented list of invalid fields, there and valid


async def test_errors_of_a_fastapi_route_are_as_documented(
    document: dict[str, Any], client: httpx.AsyncClient, db_url: str
) -> None:
    unauthenticated = await client.get("/v1/dsr/audit")
    assert unauthenticated.status_code == 401
    assert_documented(document, unauthenticated, "/v1/dsr/audit")
    key = bearer(await api_key(db_url, "audit:read"))
    invalid = await client.get("/v1/dsr/audit", params={"limit": "0"}, headers=key)
    assert invalid.status_code == 422
    assert_documented(document, invalid, "/v1/dsr/audit")


async def test_503s_while_the_database_is_away_are_as_documented(
    document: dict[str, Any], server_url: str, tmp_path: Path
) -> None:
    absent = database_url(server_url, f"consent_absent_{uuid.uuid4().hex[:10]}")  # never made
    app = create_app(make_settings(absent, tmp_path))
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
    key = {"Authorization": "Bearer csk_" + "x" * 43}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        for answer, path in (
            (
                await client.get("/v1/properties/itsailor/schema"),
                "/v1/properties/{property}/schema",
            ),
            (await client.get("/v1/dsr/audit", headers=key), "/v1/dsr/audit"),
            (await client.get("/metrics", headers=key), "/metrics"),
        ):
            assert answer.status_code == 503, answer.text
            assert_documented(document, answer, path)

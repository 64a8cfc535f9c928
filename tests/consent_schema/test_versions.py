"""Consent schema versions: publishing, reading, caching headers, immutability, concurrency."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.app import create_app
from service.consent_schema.bodies import SchemaVersionOut
from service.consent_schema.document import ConsentSchemaDocument, canonical_json, content_hash
from service.core.json_input import URL_INT_FORM
from tests.conftest import make_settings
from tests.factories import api_key, bearer, example, published


def client_storage(prop: str) -> set[str]:
    """The browser client's localStorage entries (docs/banner.md, "What the browser keeps")."""
    return {f"consent-record:{prop}", f"consent-record:{prop}:outbox", f"cc-{prop}"}


# Every cookie, storage key and cookieless endpoint each policy in ../shared/seeds names, but for
# where the policy keeps the consent choice (ailabrix_cc, itsailor.consent.v1): the schemas list
# the entries the service's browser client writes there instead, which the page really stores
# (examples/schemas/*.yaml; tests/banner/test_client_files.py checks them against the client).
POLICY_COOKIES = {
    "ailabrix": {
        "necessary": {"session", "csrf_token", "ailabrix_lang"} | client_storage("ailabrix"),
        "analytics": {"statistics.mindys.ai", "static.cloudflareinsights.com"},
    },
    "itsailor": {
        "necessary": client_storage("itsailor")
        | {
            "directus_session_token",
            "directus_refresh_token",
            "__Host-*",
            "next-auth.csrf-token",
        },
        "functional": set(),
        "analytics": set(),
        "marketing": set(),
    },
}
POLICY_TERMS = {
    "ailabrix": {"consent_ttl_days": 180, "signals": {"gpc": "apply", "dnt": False}},
    "itsailor": {"consent_ttl_days": 365, "signals": {"gpc": "record", "dnt": "record"}},
}


def reworded(document: ConsentSchemaDocument, label: str) -> ConsentSchemaDocument:
    data = document.model_dump(mode="json")
    data["categories"][0]["label"] = label
    return ConsentSchemaDocument.model_validate(data)


def with_category(document: ConsentSchemaDocument, key: str) -> ConsentSchemaDocument:
    data = document.model_dump(mode="json")
    data["categories"].append(
        {
            "key": key,
            "label": key.title(),
            "description": "Added.",
            "required": False,
            "cookies": [],
        }
    )
    return ConsentSchemaDocument.model_validate(data)


@pytest.mark.parametrize("name", ["ailabrix", "itsailor"])
async def test_examples_publish_and_list_every_policy_cookie(
    client: httpx.AsyncClient, db_url: str, name: str
) -> None:
    await published(db_url, example(name))
    response = await client.get(f"/v1/properties/{name}/schema")
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == 1
    assert body["material"] is True
    assert body["last_material_version"] == 1
    # The body is serialised by hand once per version: it must be the documented model (whose
    # optional parts a schema file leaves out stay out).
    assert SchemaVersionOut.model_validate(body).model_dump(mode="json", exclude_none=True) == body
    content = body["content"]
    listed = {c["key"]: {cookie["name"] for cookie in c["cookies"]} for c in content["categories"]}
    assert listed == POLICY_COOKIES[name]
    assert {c["key"] for c in content["categories"] if c["required"]} == {"necessary"}
    for field, value in POLICY_TERMS[name].items():
        assert content[field] == value
    assert body["content_hash"] == content_hash(content)


async def test_republish_is_a_noop_and_material_flags_move_last_material(
    client: httpx.AsyncClient, db_url: str
) -> None:
    key = await api_key(db_url, "schemas:write")
    url = "/v1/properties/itsailor/schema/versions"
    document = example("itsailor")
    first = await client.post(
        url, json={"content": document.model_dump(mode="json")}, headers=bearer(key)
    )
    assert first.status_code == 201
    assert first.headers["location"] == "/v1/properties/itsailor/schema/versions/1"

    again = await client.post(
        url, json={"content": document.model_dump(mode="json")}, headers=bearer(key)
    )
    assert again.status_code == 200
    assert again.json()["version"] == 1

    wording = reworded(document, "Essential")
    second = await client.post(
        url,
        json={"material": False, "content": wording.model_dump(mode="json")},
        headers=bearer(key),
    )
    assert second.status_code == 201
    assert (second.json()["version"], second.json()["last_material_version"]) == (2, 1)
    assert second.json()["material"] is False

    new_category = with_category(wording, "personalisation")
    third = await client.post(
        url, json={"content": new_category.model_dump(mode="json")}, headers=bearer(key)
    )
    assert (third.json()["version"], third.json()["last_material_version"]) == (3, 3)

    listing = (await client.get(url)).json()
    assert listing["current_version"] == 3
    assert listing["last_material_version"] == 3
    assert [
        (v["version"], v["material"], v["last_material_version"]) for v in listing["items"]
    ] == [
        (1, True, 1),
        (2, False, 1),
        (3, True, 3),
    ]
    # Old versions stay as they were published.
    v2 = (await client.get(f"{url}/2")).json()
    assert v2["content"]["categories"][0]["label"] == "Essential"
    assert [c["key"] for c in v2["content"]["categories"]][-1] == "marketing"


async def test_first_version_is_material_even_when_asked_otherwise(
    client: httpx.AsyncClient, db_url: str
) -> None:
    version = await published(db_url, example("ailabrix"), material=False)
    assert (version.version, version.material, version.last_material_version) == (1, True, 1)


async def test_etag_and_conditional_get(client: httpx.AsyncClient, db_url: str) -> None:
    await published(db_url, example("ailabrix"))
    first = await client.get("/v1/properties/ailabrix/schema")
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "public, max-age=60"

    cached = await client.get("/v1/properties/ailabrix/schema", headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == etag
    weak = await client.get(
        "/v1/properties/ailabrix/schema", headers={"If-None-Match": f'"other", W/{etag}'}
    )
    assert weak.status_code == 304
    assert (
        await client.get("/v1/properties/ailabrix/schema", headers={"If-None-Match": '"1-nope"'})
    ).status_code == 200

    pinned = await client.get("/v1/properties/ailabrix/schema/versions/1")
    assert pinned.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert pinned.headers["etag"] == etag

    key = await api_key(db_url, "schemas:write")
    changed = reworded(example("ailabrix"), "Essential")
    await client.post(
        "/v1/properties/ailabrix/schema/versions",
        json={"content": changed.model_dump(mode="json")},
        headers=bearer(key),
    )
    after = await client.get("/v1/properties/ailabrix/schema", headers={"If-None-Match": etag})
    assert after.status_code == 200
    assert after.json()["version"] == 2
    assert after.headers["etag"] != etag


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE consent_schema_versions SET material = NOT material",
        "UPDATE consent_schema_versions SET content = '{}'::jsonb",
        "DELETE FROM consent_schema_versions",
        "TRUNCATE consent_schema_versions CASCADE",
    ],
)
async def test_database_refuses_to_change_published_versions(
    db_url: str, db: asyncpg.Connection, statement: str
) -> None:
    await published(db_url, example("itsailor"))
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="immutable"):
        await db.execute(statement)
    row = await db.fetchrow("SELECT content, content_sha256 FROM consent_schema_versions")
    assert content_hash(json.loads(row["content"])) == row["content_sha256"]


async def test_concurrent_publishes_number_without_gaps_or_duplicates(
    client: httpx.AsyncClient, db_url: str, db: asyncpg.Connection
) -> None:
    key = await api_key(db_url, "schemas:write")
    base = example("itsailor")

    async def publish_variant(index: int) -> httpx.Response:
        return await client.post(
            "/v1/properties/itsailor/schema/versions",
            json={"content": reworded(base, f"Necessary #{index}").model_dump(mode="json")},
            headers=bearer(key),
        )

    responses = await asyncio.gather(*(publish_variant(i) for i in range(20)))
    assert [r.status_code for r in responses] == [201] * 20
    assert sorted(r.json()["version"] for r in responses) == list(range(1, 21))
    stored = [
        r["version"]
        for r in await db.fetch("SELECT version FROM consent_schema_versions ORDER BY 1")
    ]
    assert stored == list(range(1, 21))
    assert await db.fetchval("SELECT current_version FROM consent_properties") == 20


async def test_unknown_property_and_version_are_404_problems(
    client: httpx.AsyncClient, db_url: str
) -> None:
    for path in (
        "/v1/properties/nosuch/schema",
        "/v1/properties/nosuch/schema/versions",
        "/v1/properties/nosuch/schema/versions/1",
    ):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert "nosuch" in response.json()["detail"]
    await published(db_url, example("ailabrix"))
    missing = await client.get("/v1/properties/ailabrix/schema/versions/7")
    assert missing.status_code == 404
    assert "no schema version 7" in missing.json()["detail"]
    bad = await client.get("/v1/properties/Not_A_Slug/schema")
    assert bad.status_code == 422


NOT_CANONICAL = f"Input should be {URL_INT_FORM}"  # a whole number in decimal digits, such as 3…
SPELLINGS = [
    ("1.0", NOT_CANONICAL),
    ("+1", NOT_CANONICAL),
    ("01", NOT_CANONICAL),
    ("%201", NOT_CANONICAL),  # " 1"
    ("1%20", NOT_CANONICAL),
    ("1%0A", NOT_CANONICAL),  # a trailing newline
    ("1_0", NOT_CANONICAL),  # int("1_0") is 10
    ("1e0", NOT_CANONICAL),
    ("%D9%A3", NOT_CANONICAL),  # an Arabic-Indic 3, which int() reads
    ("-1", NOT_CANONICAL),
    ("0", "Input should be greater than or equal to 1"),
    ("2147483648", "Input should be less than or equal to 2147483647"),
    ("9" * 5000, "Input should be less than or equal to 2147483647"),
]


@pytest.mark.parametrize(("spelling", "detail"), SPELLINGS, ids=[s[:12] for s, _ in SPELLINGS])
async def test_a_version_in_a_url_has_one_spelling(
    client: httpx.AsyncClient, db_url: str, spelling: str, detail: str
) -> None:
    """`/versions/1.0` was served as version 1: one resource, many URLs (and caches). A malformed
    number is a 422 at the path parameter; a well-formed one without a version, a 404."""
    await published(db_url, example("ailabrix"))
    writer = bearer(await api_key(db_url, "schemas:write"))
    for response in (
        await client.get(f"/v1/properties/ailabrix/schema/versions/{spelling}"),
        await client.post(
            f"/v1/properties/ailabrix/schema/versions/{spelling}/cancellation", headers=writer
        ),
    ):
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"] == [{"pointer": "/path/version", "detail": detail}]
        assert response.json()["detail"] == f"/path/version: {detail}"
    assert (await client.get("/v1/properties/ailabrix/schema/versions/1")).status_code == 200
    assert (await client.get("/v1/properties/ailabrix/schema/versions/2")).status_code == 404


async def test_every_schema_read_answers_head_as_its_get(
    client: httpx.AsyncClient, db_url: str
) -> None:
    """HEAD is GET without the content (RFC 9110, section 9.3.2), on the hot routes and on
    FastAPI's alike; a 405 says so in `Allow`."""
    await published(db_url, example("ailabrix"))
    for path in ("", "/versions", "/versions/1"):  # hot, not hot, hot
        url = f"/v1/properties/ailabrix/schema{path}"
        get, head = await client.get(url), await client.head(url)
        assert (head.status_code, head.content) == (200, b""), path
        for header in ("content-type", "content-length", "cache-control", "etag"):
            assert head.headers.get(header) == get.headers.get(header), (path, header)
        refused = await client.delete(url)
        assert refused.status_code == 405
        assert refused.headers["allow"] == "GET, HEAD"
    head_of_post = await client.head("/v1/properties/ailabrix/schema/versions/1/cancellation")
    assert (head_of_post.status_code, head_of_post.headers["allow"]) == (405, "POST")


async def test_publish_rejects_a_mismatched_or_invalid_document(
    client: httpx.AsyncClient, db_url: str
) -> None:
    key = await api_key(db_url, "schemas:write")
    content: dict[str, Any] = example("itsailor").model_dump(mode="json")
    mismatch = await client.post(
        "/v1/properties/other/schema/versions", json={"content": content}, headers=bearer(key)
    )
    assert mismatch.status_code == 422
    assert "URL names 'other'" in mismatch.json()["detail"]

    content["categories"][1]["cookies"] = [
        {
            "name": "x",
            "provider": "y",
            "purpose": "z",
            "duration": "1d",
            "party": "fourth",
            "storage": "cookie",
        }
    ]
    invalid = await client.post(
        "/v1/properties/itsailor/schema/versions", json={"content": content}, headers=bearer(key)
    )
    assert invalid.status_code == 422
    pointers = [error["pointer"] for error in invalid.json()["errors"]]
    assert "/body/content/categories/1/cookies/0/party" in pointers


async def test_a_misspelt_publish_option_is_refused_and_nothing_is_published(
    client: httpx.AsyncClient, db_url: str
) -> None:
    """A typo in `material` or `effective_at` is not dropped: dropped, it would publish a
    material version in force at once, which nothing can undo."""
    key = await api_key(db_url, "schemas:write")
    content: dict[str, Any] = example("itsailor").model_dump(mode="json")
    first = await client.post(
        "/v1/properties/itsailor/schema/versions", json={"content": content}, headers=bearer(key)
    )
    assert first.status_code == 201
    content["categories"][0]["label"] += " (reworded)"
    for typo, value in (("materal", False), ("effective_on", "2030-01-01T00:00:00Z")):
        refused = await client.post(
            "/v1/properties/itsailor/schema/versions",
            json={"material": False, "content": content, typo: value},
            headers=bearer(key),
        )
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert [error["pointer"] for error in refused.json()["errors"]] == [f"/body/{typo}"]
    listed = await client.get("/v1/properties/itsailor/schema/versions")
    assert [item["version"] for item in listed.json()["items"]] == [1]


def test_canonical_json_is_order_independent() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"]}) == canonical_json({"a": [1, "é"], "b": 1})
    assert canonical_json({"a": "é"}) == '{"a":"é"}'.encode()


async def test_cors_for_configured_origins_with_preflight(db_url: str, tmp_path: Path) -> None:
    await published(db_url, example("itsailor"))
    app = create_app(make_settings(db_url, tmp_path, cors_origins=["https://itsailor.io"]))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        preflight = await client.options(
            "/v1/properties/itsailor/schema",
            headers={
                "Origin": "https://itsailor.io",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "if-none-match",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://itsailor.io"
        assert "GET" in preflight.headers["access-control-allow-methods"]

        allowed = await client.get(
            "/v1/properties/itsailor/schema", headers={"Origin": "https://itsailor.io"}
        )
        assert allowed.headers["access-control-allow-origin"] == "https://itsailor.io"
        assert "etag" in allowed.headers["access-control-expose-headers"].lower()

        other = await client.get(
            "/v1/properties/itsailor/schema", headers={"Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers

        refused = await client.options(
            "/v1/properties/itsailor/schema",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert refused.status_code == 400
        assert refused.headers["content-type"] == "application/problem+json"
        assert "origin" in refused.json()["detail"]
        assert refused.headers["x-request-id"]

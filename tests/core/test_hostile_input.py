"""Hostile and ambiguous input: rejected with a 422 naming what is wrong, nothing stored, never a
500, and never a failed batch for the good events beside it (docs/guarantees.md, "Bad input gets
a clear error and changes nothing")."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.app import create_app
from service.core.json_input import loads
from service.core.pipeline import ConsentAPI
from tests.conftest import make_settings
from tests.factories import api_key, bearer, event, example, published

EVENTS = "/v1/properties/itsailor/consent-events"


@pytest.fixture
async def schemas(db_url: str) -> None:
    await published(db_url, example("itsailor"))


async def stored(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM consent_events"))


@pytest.mark.usefixtures("schemas")
@pytest.mark.parametrize(
    ("changes", "pointer"),
    [
        ({"categories": {"analytics": "yes"}}, "/body/categories/analytics"),
        ({"categories": {"analytics": "no"}}, "/body/categories/analytics"),
        ({"categories": {"analytics": "on"}}, "/body/categories/analytics"),
        ({"categories": {"analytics": "t"}}, "/body/categories/analytics"),
        ({"categories": {"analytics": "FALSE"}}, "/body/categories/analytics"),
        ({"categories": {"analytics": 1}}, "/body/categories/analytics"),
        ({"categories": {"analytics": 0}}, "/body/categories/analytics"),
        ({"categories": {"analytics": 1.0}}, "/body/categories/analytics"),
        ({"gpc": "1"}, "/body/gpc"),
        ({"gpc": 1}, "/body/gpc"),
        ({"schema_version": "1"}, "/body/schema_version"),
        ({"schema_version": True}, "/body/schema_version"),
        ({"schema_version": 1.0}, "/body/schema_version"),
        ({"page_url": "https://itsailor.io/a\u0000b"}, "/body/page_url"),
        ({"page_url": "https://itsailor.io/\u0001"}, "/body/page_url"),
        ({"page_url": "https://itsailor.io/a\u007fb"}, "/body/page_url"),
        ({"page_url": "https://itsailor.io/gpj.\u202eexe"}, "/body/page_url"),
        ({"page_url": "https://itsailor.io/a\u2028b"}, "/body/page_url"),
        ({"page_url": "https://itsailor.io/a\u200bb"}, "/body/page_url"),
        ({"tcf_string": "CP\u0000"}, "/body/tcf_string"),
        ({"gpp_string": "DB\u0000"}, "/body/gpp_string"),
    ],
)
async def test_ambiguous_or_unstorable_values_are_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, changes: dict[str, Any], pointer: str
) -> None:
    body = event("save-selection", categories={"analytics": True}) | changes
    response = await client.post(EVENTS, json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert pointer in [error["pointer"] for error in response.json()["errors"]]
    assert await stored(db) == 0


@pytest.mark.usefixtures("schemas")
@pytest.mark.parametrize(
    ("changes", "pointer", "detail"),
    [
        ({"source": "dsr"}, "/body/source", "Input should be 'banner' or 'signal'"),
        (
            {"gpp_string": "D" * 8193},
            "/body/gpp_string",
            "String should have at most 8192 characters",
        ),
        ({"user_id": ""}, "/body/user_id", "String should have at least 1 character"),
        (
            {"categories": {"": True}},
            "/body/categories/",
            "String should have at least 1 character",
        ),
    ],
)
async def test_a_refusal_names_the_field_as_the_client_wrote_it(
    client: httpx.AsyncClient, changes: dict[str, Any], pointer: str, detail: str
) -> None:
    """Values as JSON has them (not Python's enum members), lengths of text in characters, a
    key's pointer the member's own (no `[key]` segment)."""
    body = event("save-selection", categories={"analytics": True}) | changes
    response = await client.post(EVENTS, json=body)
    assert response.status_code == 422, response.text
    assert {"pointer": pointer, "detail": detail} in response.json()["errors"]


@pytest.mark.usefixtures("schemas")
@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
@pytest.mark.parametrize(
    ("raw", "named"),
    [
        (
            '{"subject_id":"%s","event_type":"accept-all","schema_version":1,'
            '"event_type":"reject-all"}',
            '"event_type"',
        ),
        (
            '{"subject_id":"%s","event_type":"save-selection","schema_version":1,'
            '"categories":{"analytics":true,"analytics":false}}',
            '"analytics"',
        ),
        (
            '{"subject_id":"%s","event_type":"accept-all","schema_version":1,"gpc":NaN}',
            "NaN and Infinity are not JSON numbers at line 1 column ",
        ),
        (
            '{"subject_id":"%s","event_type":"accept-all","schema_version":1,"gpc":-Infinity}',
            "NaN and Infinity are not JSON numbers at line 1 column ",
        ),
        (
            '{"subject_id":"%s","event_type":"accept-all","schema_version":1,'
            '"page_url":"https://x.io/\\ud800"}',
            "a lone UTF-16 surrogate escape (\\ud800 to \\udfff without its pair) is not text",
        ),
    ],
)
async def test_a_body_that_could_mean_two_things_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, raw: str, named: str, content_type: str
) -> None:
    response = await client.post(
        EVENTS, content=raw % uuid.uuid4(), headers={"Content-Type": content_type}
    )
    assert response.status_code == 422, response.text
    assert named in response.json()["detail"]
    assert await stored(db) == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"a": -Inf}', "invalid number at line 1 column 8"),
        (b'{"a":1} NaN', "trailing characters at line 1 column 9"),
        (b'{"a":1,NaN}', "key must be a string at line 1 column 8"),
        # A raw line break in a string, the next line starting with a word that is not a value.
        (b'{"p":"q=Avengers:\nInfinity"}', "control character (\\u0000-\\u001F) found while"),
        (b'{"a": NaN}', "NaN and Infinity are not JSON numbers at line 1 column 7"),
        (b'{"a": -Infinity}', "NaN and Infinity are not JSON numbers at line 1 column 8"),
        ('{"\u00e9": NaN}'.encode(), "NaN and Infinity are not JSON numbers at line 1 column 8"),
    ],
)
def test_a_json_error_is_named_as_what_was_sent(body: bytes, message: str) -> None:
    """NaN and Infinity are named where a value was expected, and only there: every other
    error keeps the parser's own words."""
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        loads(body)
    assert ("NaN and Infinity" in str(raised.value.args[0])) is message.startswith("NaN")


@pytest.mark.usefixtures("schemas")
async def test_bad_rows_never_fail_the_good_ones_beside_them(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    good = [client.post(EVENTS, json=event()) for _ in range(40)]
    bad = [
        client.post(EVENTS, json=event(page_url="https://x.io/\u0000", tcf_string="\u0000"))
        for _ in range(40)
    ]
    answers = await asyncio.gather(*good, *bad)
    assert [a.status_code for a in answers] == [201] * 40 + [422] * 40
    assert await stored(db) == 40


async def test_dsr_bodies_are_strict_too(
    client: httpx.AsyncClient, db_url: str, db: asyncpg.Connection
) -> None:
    await published(db_url, example("itsailor"))
    key = await api_key(db_url, "dsr:read", "dsr:erase", "schemas:write")
    first, second = uuid.uuid4(), uuid.uuid4()
    for subject in (first, second):
        assert (await client.post(EVENTS, json=event(subject_id=subject))).status_code == 201
    headers = bearer(key) | {"Content-Type": "application/json"}
    duplicate = f'{{"subject_id":"{first}","subject_id":"{second}"}}'
    erased = await client.post("/v1/dsr/erasures", content=duplicate, headers=headers)
    assert erased.status_code == 422
    assert '"subject_id"' in erased.json()["detail"]
    assert await stored(db) == 2  # neither subject was erased
    limit = await client.post(
        "/v1/dsr/history", json={"subject_id": str(first), "limit": "5"}, headers=bearer(key)
    )
    assert limit.status_code == 422
    reference = await client.post(
        "/v1/dsr/erasures",
        json={"subject_id": str(first), "reference": "T-1\u0000"},
        headers=bearer(key),
    )
    assert reference.status_code == 422
    for address in (" 127.0.0.1", "127.0.0.1\n"):  # one address, one spelling: not tidied
        spaced = await client.post("/v1/dsr/history", json={"ip": address}, headers=bearer(key))
        assert spaced.status_code == 422, spaced.text
        assert spaced.json()["errors"][0]["pointer"] == "/body/ip"
    assert await stored(db) == 2


@pytest.mark.parametrize(
    "window",
    [
        {"since": "0001-01-01T00:00:00+01:00"},
        {"until": "9999-12-31T23:59:59-01:00"},
    ],
)
@pytest.mark.parametrize("path", ["/v1/dsr/history", "/v1/dsr/exports", "/v1/dsr/erasures"])
async def test_dates_outside_what_can_be_stored_are_422(
    client: httpx.AsyncClient, db_url: str, window: dict[str, str], path: str
) -> None:
    key = await api_key(db_url, "dsr:read", "dsr:erase")
    body = {"subject_id": str(uuid.uuid4()), **window}
    response = await client.post(path, json=body, headers=bearer(key))
    assert response.status_code == 422, response.text
    assert "out of range" in response.json()["detail"]


async def test_cursors_cannot_be_forged(client: httpx.AsyncClient, db_url: str) -> None:
    key = await api_key(db_url, "dsr:read", "audit:read")
    forged_audit = base64.urlsafe_b64encode(b"audit.99999999999999999999").decode()
    audit = await client.get(f"/v1/dsr/audit?cursor={forged_audit}", headers=bearer(key))
    assert audit.status_code == 422
    await published(db_url, example("itsailor"))
    subject = uuid.uuid4()
    for _ in range(3):
        await client.post(EVENTS, json=event(subject_id=subject))
    query = {"subject_id": str(subject), "limit": 1}
    page = (await client.post("/v1/dsr/history", json=query, headers=bearer(key))).json()
    position, mac = base64.urlsafe_b64decode(page["next_cursor"] + "==").decode().split(".")
    moved = base64.urlsafe_b64encode(f"{int(position) + 1}.{mac}".encode()).decode()
    answer = await client.post(
        "/v1/dsr/history", json=query | {"cursor": moved}, headers=bearer(key)
    )
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["pointer"] == "/body/cursor"
    # One cursor, one spelling: not padded, not empty (which read as "the first page").
    cursor = page["next_cursor"]
    for spelling, status in (
        (cursor, 200),
        (cursor + "=" * (-len(cursor) % 4 or 4), 422),
        ("", 422),
    ):
        answer = await client.post(
            "/v1/dsr/history", json=query | {"cursor": spelling}, headers=bearer(key)
        )
        assert answer.status_code == status, (spelling, answer.text)
    empty = await client.get("/v1/dsr/audit?cursor=", headers=bearer(key))
    assert empty.status_code == 422, empty.text


async def test_a_schema_publish_with_nul_or_ambiguous_values_is_422(
    client: httpx.AsyncClient, db_url: str
) -> None:
    key = await api_key(db_url, "schemas:write")
    content = example("itsailor").model_dump(mode="json")
    for changed in (
        content | {"policy_url": "https://itsailor.io/cookies"} | {"consent_ttl_days": "365"},
        content | {"signals": {"gpc": "true", "dnt": True}},
        content | {"categories": [content["categories"][0] | {"label": "Nec\u0000essary"}]},
    ):
        response = await client.post(
            "/v1/properties/itsailor/schema/versions",
            json={"material": True, "content": changed},
            headers=bearer(key),
        )
        assert response.status_code == 422, response.text


@pytest.mark.parametrize("value", ["maybe", "true", 1, None])
async def test_a_signal_handling_refusal_is_one_error_at_the_field(
    client: httpx.AsyncClient, db_url: str, value: object
) -> None:
    """Not one error per member of the union, at pointers ending in the members' names."""
    content = example("itsailor").model_dump(mode="json") | {"signals": {"gpc": value, "dnt": True}}
    response = await client.post(
        "/v1/properties/itsailor/schema/versions",
        json={"material": True, "content": content},
        headers=bearer(await api_key(db_url, "schemas:write")),
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [
        {
            "pointer": "/body/content/signals/gpc",
            "detail": "Input should be false, true, 'apply' or 'record'",
        }
    ]


async def test_private_answers_are_not_cached_and_nothing_is_sniffed(
    client: httpx.AsyncClient, db_url: str
) -> None:
    key = await api_key(db_url, "dsr:read", "audit:read")
    history = await client.post(
        "/v1/dsr/history", json={"subject_id": str(uuid.uuid4())}, headers=bearer(key)
    )
    audit = await client.get("/v1/dsr/audit", headers=bearer(key))
    for response in (history, audit):
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
    for response in (history, audit, await client.get("/healthz")):
        assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.usefixtures("schemas")
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/properties/itsailor/schema/"), ("POST", EVENTS + "/"), ("GET", "/healthz/")],
)
async def test_a_trailing_slash_is_not_redirected_to_the_host_header(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    """Starlette would answer 307 with `Location: http://<Host>/…`: a forged Host header would send
    a browser to another site (docs/architecture.md, "Limits")."""
    response = await client.request(method, path, headers={"Host": "evil.example"}, json=event())
    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.headers["content-type"] == "application/problem+json"


async def test_admin_routes_check_the_key_before_reading_a_body(
    client: httpx.AsyncClient, db_url: str
) -> None:
    key = await api_key(db_url, "dsr:read", "schemas:write")
    json_type = {"Content-Type": "application/json"}
    huge = b'{"subject_id": "' + b"x" * 5_000_000 + b'"}'
    for path in ("/v1/dsr/history", "/v1/properties/itsailor/schema/versions"):
        anonymous = await client.post(path, content=huge, headers=json_type)
        assert anonymous.status_code == 401, path
        malformed = await client.post(path, content=b"{not json", headers=json_type)
        assert malformed.status_code == 401, path  # the key first, then the body
        too_large = await client.post(path, content=huge, headers=json_type | bearer(key))
        assert too_large.status_code == 413, path
        assert too_large.headers["content-type"] == "application/problem+json"
        form_type = {"Content-Type": "application/x-www-form-urlencoded"}
        form = await client.post(path, content=b"a=b", headers=form_type | bearer(key))
        assert form.status_code == 415, path


def test_every_body_is_read_with_a_cap() -> None:
    """No route lets FastAPI read a body: each reads its own with `read_json` and a limit."""
    from fastapi.routing import iter_route_contexts

    from service.app import create_app
    from service.core.config import Settings

    app = create_app(Settings(_env_file=None))
    with_body = [
        route.path
        for route in iter_route_contexts(app.routes)
        if getattr(route, "dependant", None) is not None and route.dependant.body_params
    ]
    assert with_body == []


async def test_an_event_limit_per_client_when_configured(
    db_url: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    await published(db_url, example("itsailor"))
    app = create_app(make_settings(db_url, tmp_path, event_rate_limit=3))
    async with (
        app.router.lifespan_context(app),
        _client(app, "198.51.100.20") as flooder,
        _client(app, "198.51.100.21") as other,
    ):
        statuses = [(await flooder.post(EVENTS, json=event())).status_code for _ in range(4)]
        assert statuses == [201, 201, 201, 429]
        refused = await flooder.post(EVENTS, json=event())
        assert refused.headers["content-type"] == "application/problem+json"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert (await other.post(EVENTS, json=event())).status_code == 201
    assert await stored(db) == 4


async def test_failed_key_checks_are_limited_per_client(db_url: str, tmp_path: Path) -> None:
    key = await api_key(db_url, "dsr:read")
    app = create_app(make_settings(db_url, tmp_path, auth_failure_limit=3))
    body = {"subject_id": str(uuid.uuid4())}
    async with (
        app.router.lifespan_context(app),
        _client(app, "198.51.100.30") as guesser,
        _client(app, "198.51.100.31") as other,
    ):
        for attempt in range(3):
            wrong = {"Authorization": f"Bearer csk_guess{attempt}"}
            answer = await guesser.post("/v1/dsr/history", json=body, headers=wrong)
            assert answer.status_code == 401
        locked = await guesser.post("/v1/dsr/history", json=body, headers=bearer(key))
        assert locked.status_code == 429
        assert "retry-after" in locked.headers
        assert (
            await other.post("/v1/dsr/history", json=body, headers=bearer(key))
        ).status_code == 200


def _client(app: ConsentAPI, peer: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(peer, 1)), base_url="http://t"
    )


DOUBLED = {
    "Content-Type": ("application/xml", "application/json"),
    "Content-Encoding": ("identity", "identity"),
    "Origin": ("https://evil.example", "https://itsailor.io"),
    "Sec-GPC": ("1", "0"),
    "DNT": ("1", "0"),
}


@pytest.mark.usefixtures("schemas")
@pytest.mark.parametrize("name", list(DOUBLED))
async def test_a_header_that_holds_one_value_sent_twice_is_400(
    client: httpx.AsyncClient, db: asyncpg.Connection, name: str
) -> None:
    """Which of two `Sec-GPC` lines a browser meant, or which `Origin`, would be a guess (the
    last one won): refused, as a repeated JSON key is."""
    headers = [(name, value) for value in DOUBLED[name]]
    if name != "Content-Type":
        headers.append(("Content-Type", "application/json"))
    answer = await client.post(EVENTS, content=json.dumps(event()), headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    expected = f"the {name.lower()} header was sent more than once; it holds one value"
    assert answer.json()["detail"] == expected
    assert await stored(db) == 0
    if name in ("Sec-GPC", "DNT"):
        state = await client.get(
            f"/v1/properties/itsailor/consents/{uuid.uuid4()}", headers=headers
        )
        assert (state.status_code, state.json()["detail"]) == (400, expected)


@pytest.mark.usefixtures("schemas")
@pytest.mark.parametrize("coding", ["gzip", "br", "deflate", "gzip, identity"])
async def test_a_content_coding_is_refused_not_ignored(
    client: httpx.AsyncClient, db: asyncpg.Connection, coding: str
) -> None:
    """A plain body labelled gzip was stored as if unlabelled, and a real gzip body read as bad
    JSON: the label is refused instead (RFC 9110, section 15.5.16)."""
    headers = {"Content-Type": "application/json", "Content-Encoding": coding}
    answer = await client.post(EVENTS, content=json.dumps(event()), headers=headers)
    assert answer.status_code == 415, answer.text
    assert answer.json()["detail"] == (
        f"send the body uncompressed: Content-Encoding {coding!r} is not read"
    )
    assert await stored(db) == 0
    plain = {"Content-Type": "application/json", "Content-Encoding": "identity"}
    assert (
        await client.post(EVENTS, content=json.dumps(event()), headers=plain)
    ).status_code == 201


@pytest.mark.usefixtures("schemas")
async def test_a_user_agent_is_stored_with_nothing_hidden_or_reordered(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """A header is bytes; a browser's User-Agent is printable ASCII, stored as sent. Controls,
    a right-to-left override sent as UTF-8 and a backslash are written `\\xNN`, one character per
    byte, so an export shows what came and each header has one stored form."""
    sent = b"Bot/1.0 \xe2\x80\xae evil \\x41 \x7f\x80"
    answer = await client.post(EVENTS, json=event(), headers={b"User-Agent": sent})
    assert answer.status_code == 201, answer.text
    stored_as = await db.fetchval("SELECT user_agent FROM consent_events")
    assert stored_as == "Bot/1.0 \u00e2\\x80\u00ae evil \\x5cx41 \\x7f\\x80"
    assert stored_as.isprintable()
    browser = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    answer = await client.post(EVENTS, json=event(), headers={"User-Agent": browser})
    assert answer.status_code == 201, answer.text
    agents = {row["user_agent"] for row in await db.fetch("SELECT user_agent FROM consent_events")}
    assert browser in agents

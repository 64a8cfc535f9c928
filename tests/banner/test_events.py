"""POST /v1/properties/{property}/consent-events: every rule of the banner API (README, "API at a
glance")."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from service.app import create_app
from service.banner.bodies import ConsentEventIn
from service.banner.service import new_event
from service.core.hashing import Hasher
from service.core.pipeline import ConsentAPI
from service.ledger.bodies import RecordedEvent
from service.ledger.leaf import attach_leaf
from service.state import of as services
from tests.conftest import CLIENT_IP, TEST_KEY, make_settings
from tests.factories import (
    APPLYING,
    Clock,
    api_key,
    applying_example,
    bearer,
    event,
    example,
    published,
)

ITSAILOR = "/v1/properties/itsailor/consent-events"
AILABRIX = "/v1/properties/ailabrix/consent-events"
APPLYING_EVENTS = f"/v1/properties/{APPLYING}/consent-events"


@pytest.fixture
async def schemas(db_url: str) -> None:
    await published(db_url, example("itsailor"))
    await published(db_url, example("ailabrix"))
    await published(db_url, applying_example())


@pytest.fixture
def clock(app: ConsentAPI) -> Clock:
    clock = Clock()
    services(app).clock = clock
    return clock


async def stored(db: asyncpg.Connection, event_id: str) -> dict[str, Any]:
    """The stored row, its digests (stored as 32 bytes) in the hex the service computes."""
    row = await db.fetchrow("SELECT * FROM consent_events WHERE event_id = $1", uuid.UUID(event_id))
    assert row is not None
    found = dict(row)
    for name in ("ip_hash", "user_hash", "request_hash"):
        if found[name] is not None:
            assert len(found[name]) == 32
            found[name] = bytes(found[name]).hex()
    return found


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


@pytest.mark.usefixtures("schemas")
async def test_accept_all_returns_and_stores_the_record(
    client: httpx.AsyncClient, db: asyncpg.Connection, clock: Clock, app: ConsentAPI
) -> None:
    body = event("accept-all", page_url="https://itsailor.io/pricing?utm=x&email=a@b.c#top")
    response = await client.post(ITSAILOR, json=body, headers={"User-Agent": "Mozilla/5.0 test"})
    assert response.status_code == 201
    record = response.json()
    everything = {"necessary": True, "functional": True, "analytics": True, "marketing": True}
    assert record["choices"] == everything
    assert record["effective"] == everything
    assert record["status"] == "given"
    assert record["signals"] == {"gpc": False, "dnt": False, "applied": []}
    assert record["source"] == "banner"
    assert record["subject_id"] == body["subject_id"]
    assert record["property"] == "itsailor"
    assert record["schema_version"] == 1
    assert record["recorded_at"] == iso(clock.now)
    assert record["expires_at"] == iso(clock.now + timedelta(days=365))
    # The hot path writes this JSON by hand: it must be exactly the documented RecordedEvent.
    assert RecordedEvent.model_validate(record).model_dump(mode="json") == record
    assert set(record) == {
        "event_id", "subject_id", "property", "event_type", "schema_version", "recorded_at",
        "choices", "effective", "signals", "source", "status", "expires_at", "receipt",
        "receipt_proof",
    }  # fmt: skip

    row = await stored(db, record["event_id"])
    hasher: Hasher = services(app).hasher
    assert row["ip_hash"] == hasher.ip(CLIENT_IP)
    assert row["hash_key_id"] == hasher.current.key_id
    assert row["user_agent"] == "Mozilla/5.0 test"
    assert row["page_url"] == "https://itsailor.io/pricing"
    assert json.loads(row["effective"]) == everything


@pytest.mark.usefixtures("schemas")
@pytest.mark.parametrize(
    ("event_type", "categories", "expected", "status"),
    [
        ("reject-all", None, {"functional": False, "analytics": False, "marketing": False}, "refused"),
        ("withdraw", None, {"functional": False, "analytics": False, "marketing": False}, "withdrawn"),
        ("save-selection", {"analytics": True}, {"functional": False, "analytics": True, "marketing": False}, "partially-given"),
        ("save-selection", {"necessary": True, "functional": True, "analytics": True, "marketing": True}, {"functional": True, "analytics": True, "marketing": True}, "given"),
        ("save-selection", {}, {"functional": False, "analytics": False, "marketing": False}, "refused"),
        ("accept-all", {"analytics": True}, {"functional": True, "analytics": True, "marketing": True}, "given"),
        ("reject-all", {"necessary": True, "marketing": False}, {"functional": False, "analytics": False, "marketing": False}, "refused"),
    ],
)  # fmt: skip
async def test_event_semantics(
    client: httpx.AsyncClient,
    event_type: str,
    categories: dict[str, bool] | None,
    expected: dict[str, bool],
    status: str,
) -> None:
    fields: dict[str, Any] = {} if categories is None else {"categories": categories}
    response = await client.post(ITSAILOR, json=event(event_type, **fields))
    assert response.status_code == 201, response.text
    record = response.json()
    assert record["choices"] == {"necessary": True, **expected}
    assert record["effective"] == record["choices"]
    assert record["status"] == status


@pytest.mark.usefixtures("schemas")
async def test_re_prompt_records_the_showing_and_decides_nothing(client: httpx.AsyncClient) -> None:
    response = await client.post(ITSAILOR, json=event("re-prompt"))
    assert response.status_code == 201
    record = response.json()
    assert (record["choices"], record["effective"], record["status"], record["expires_at"]) == (
        {},
        {},
        None,
        None,
    )
    with_categories = await client.post(
        ITSAILOR, json=event("re-prompt", categories={"analytics": True})
    )
    assert with_categories.status_code == 422


@pytest.mark.usefixtures("schemas")
@pytest.mark.parametrize(
    ("headers", "body_gpc", "applied"),
    [
        ({"Sec-GPC": "1"}, None, ["gpc"]),
        ({}, True, ["gpc"]),
        ({"DNT": "1"}, None, ["dnt"]),
        ({"Sec-GPC": "1", "DNT": "1"}, None, ["gpc", "dnt"]),
        ({"Sec-GPC": "0", "DNT": "0"}, False, []),
    ],
)
async def test_signals_turn_optional_categories_off_where_honoured(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    headers: dict[str, str],
    body_gpc: bool | None,
    applied: list[str],
) -> None:
    fields: dict[str, Any] = {} if body_gpc is None else {"gpc": body_gpc}
    response = await client.post(
        APPLYING_EVENTS, json=event("accept-all", **fields), headers=headers
    )
    record = response.json()
    assert record["choices"]["analytics"] is True  # what the person asked for is kept
    assert record["signals"]["applied"] == applied
    off = bool(applied)
    assert record["effective"] == {
        "necessary": True, "functional": not off, "analytics": not off, "marketing": not off,
    }  # fmt: skip
    assert record["status"] == ("refused" if off else "given")
    row = await stored(db, record["event_id"])
    assert (row["gpc"], row["dnt"]) == (record["signals"]["gpc"], record["signals"]["dnt"])
    assert json.loads(row["choices"])["analytics"] is True


@pytest.mark.usefixtures("schemas")
async def test_dnt_is_recorded_but_not_applied_where_the_policy_ignores_it(
    client: httpx.AsyncClient,
) -> None:
    # ailabrix: "The classic Do Not Track (DNT) header is non-standard and is no longer honoured".
    response = await client.post(AILABRIX, json=event("accept-all"), headers={"DNT": "1"})
    record = response.json()
    assert record["signals"] == {"gpc": False, "dnt": True, "applied": []}
    assert record["effective"] == {"necessary": True, "analytics": True}


def _client_for(app: ConsentAPI, peer: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(peer, 40000)), base_url="http://t"
    )


async def _ip_hash(
    app: ConsentAPI,
    db: asyncpg.Connection,
    peer: str,
    headers: dict[str, str] | list[tuple[str, str]],
) -> str:
    async with _client_for(app, peer) as client:
        response = await client.post(ITSAILOR, json=event(), headers=headers)
        assert response.status_code == 201
    return str((await stored(db, response.json()["event_id"]))["ip_hash"])


@pytest.mark.usefixtures("schemas")
async def test_forwarded_headers_only_from_trusted_proxies(
    db_url: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    app = create_app(make_settings(db_url, tmp_path, trusted_proxies=["10.0.0.0/8"]))
    async with app.router.lifespan_context(app):
        hasher: Hasher = services(app).hasher
        spoof = {"X-Forwarded-For": "198.51.100.1"}
        # An untrusted peer's header is ignored: the peer is the client.
        assert await _ip_hash(app, db, CLIENT_IP, spoof) == hasher.ip(CLIENT_IP)
        # A trusted proxy's is believed, read from the right past other trusted proxies.
        chain = {"X-Forwarded-For": "198.51.100.1, 192.0.2.44, 10.1.2.3"}
        assert await _ip_hash(app, db, "10.0.0.5", chain) == hasher.ip("192.0.2.44")
        # The other header is the browser's own: with X-Forwarded-For configured, never read.
        both = {"Forwarded": "for=198.51.100.32", "X-Forwarded-For": "192.0.2.46"}
        assert await _ip_hash(app, db, "10.0.0.5", both) == hasher.ip("192.0.2.46")
        unknown = {"Forwarded": "for=unknown", "X-Forwarded-For": "192.0.2.47"}
        assert await _ip_hash(app, db, "10.0.0.5", unknown) == hasher.ip("192.0.2.47")
        # Several lines of the header are one list, in order: the last line's address is nearest.
        lines = [("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", "192.0.2.45, 10.0.0.9")]
        assert await _ip_hash(app, db, "10.0.0.5", lines) == hasher.ip("192.0.2.45")
        # No header: the proxy itself is all we know.
        assert await _ip_hash(app, db, "10.0.0.5", {}) == hasher.ip("10.0.0.5")


@pytest.mark.usefixtures("schemas")
async def test_the_forwarded_header_when_configured(
    db_url: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    settings = make_settings(
        db_url, tmp_path, trusted_proxies=["10.0.0.0/8"], forwarded_header="forwarded"
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        hasher: Hasher = services(app).hasher
        forwarded = {"Forwarded": 'for=192.0.2.60;proto=https, for="[2001:db8::7]:443"'}
        assert await _ip_hash(app, db, "10.0.0.5", forwarded) == hasher.ip("2001:db8::7")
        # A browser's X-Forwarded-For is passed through by such a proxy: never read.
        both = {"X-Forwarded-For": "198.51.100.33", "Forwarded": "for=192.0.2.61"}
        assert await _ip_hash(app, db, "10.0.0.5", both) == hasher.ip("192.0.2.61")
        # A client's "for=unknown" before the proxy's own entry changes nothing.
        spoofed = {"Forwarded": "for=unknown, for=192.0.2.62"}
        assert await _ip_hash(app, db, "10.0.0.5", spoofed) == hasher.ip("192.0.2.62")


@pytest.mark.usefixtures("schemas")
async def test_ipv4_mapped_ipv6_is_normalised(app: ConsentAPI, db: asyncpg.Connection) -> None:
    hasher: Hasher = services(app).hasher
    mapped = await _ip_hash(app, db, "::ffff:203.0.113.9", {})
    assert mapped == hasher.ip("203.0.113.9") == await _ip_hash(app, db, "203.0.113.9", {})


@pytest.mark.usefixtures("schemas")
async def test_idempotent_replay_and_conflict(
    client: httpx.AsyncClient, db: asyncpg.Connection, clock: Clock
) -> None:
    body = event("save-selection", event_id=str(uuid.uuid4()), categories={"analytics": True})
    first = await client.post(ITSAILOR, json=body)
    assert first.status_code == 201
    clock.advance(minutes=5)
    retry = await client.post(
        ITSAILOR, content=json.dumps(body), headers={"Content-Type": "text/plain"}
    )
    assert retry.status_code == 200
    assert retry.json() == first.json()  # the original record, original time included

    other = await client.post(ITSAILOR, json={**body, "categories": {"marketing": True}})
    assert other.status_code == 409
    assert other.headers["content-type"] == "application/problem+json"
    assert body["event_id"] in other.json()["detail"]
    count = await db.fetchval(
        "SELECT count(*) FROM consent_events WHERE event_id = $1", uuid.UUID(body["event_id"])
    )
    assert count == 1


@pytest.mark.usefixtures("schemas")
async def test_concurrent_retries_of_one_event_store_it_once(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    body = event("accept-all", event_id=str(uuid.uuid4()))
    responses = await asyncio.gather(*(client.post(ITSAILOR, json=body) for _ in range(10)))
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201], [
        r.text for r in responses
    ]
    assert len({r.json()["recorded_at"] for r in responses}) == 1
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 1


@pytest.mark.usefixtures("schemas")
async def test_text_plain_beacon_is_accepted_like_json(client: httpx.AsyncClient) -> None:
    body = json.dumps(event("reject-all"))
    response = await client.post(
        ITSAILOR, content=body, headers={"Content-Type": "text/plain;charset=UTF-8"}
    )
    assert response.status_code == 201
    assert response.json()["status"] == "refused"


@pytest.mark.usefixtures("schemas")
@pytest.mark.parametrize(
    "content_type",
    [
        None,  # no Content-Type: read as JSON, so a beacon is not lost for it
        "application/json",
        "text/plain",
        "text/plain;charset=UTF-8",  # what sendBeacon sends with a string
        "application/json; charset=utf-8",
        "Application/JSON;Charset=Utf-8",
        'application/json; charset="UTF-8"',
        "text/plain ; charset=utf-8 ;",
        'application/json; profile="urn:x;y"; charset=utf-8',
    ],
)
async def test_utf8_or_no_charset_is_accepted(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    body = json.dumps(event("reject-all"))
    response = await client.post(ITSAILOR, content=body, headers=headers)
    assert response.request.headers.get("content-type") == content_type
    assert response.status_code == 201, response.text


@pytest.mark.usefixtures("schemas")
@pytest.mark.parametrize(
    ("content_type", "detail"),
    [
        ("text/plain; charset=latin1", "not charset 'latin1'"),
        ("application/json; charset=ISO-8859-1", "not charset 'ISO-8859-1'"),
        ('application/json; charset="utf-16"', "not charset 'utf-16'"),
        ("text/plain;charset=utf8", "not charset 'utf8'"),
        ("application/json; charset=utf-8; charset=latin1", "not charset 'latin1'"),
        ("application/json; charset", "not a media type with name=value parameters"),
        ("application/json; charset=", "not a media type with name=value parameters"),
        ('application/json; charset="utf-8', "not a media type with name=value parameters"),
    ],
)
async def test_another_charset_is_415_naming_it(
    client: httpx.AsyncClient, db: asyncpg.Connection, content_type: str, detail: str
) -> None:
    """A body sent as Latin-1 was read as UTF-8: `é` would be stored as something its sender
    did not write (RFC 8259, section 8.1: JSON between systems is UTF-8)."""
    response = await client.post(
        ITSAILOR, content=json.dumps(event()), headers={"Content-Type": content_type}
    )
    assert response.status_code == 415, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert detail in response.json()["detail"]
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 0


@pytest.mark.usefixtures("schemas")
async def test_body_too_large_is_413(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    huge = event("accept-all", tcf_string="C" * 40_000)
    response = await client.post(ITSAILOR, json=huge)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"

    async def chunks() -> Any:  # no Content-Length: the cap holds while streaming too
        for _ in range(40):
            yield b" " * 1024

    streamed = await client.post(
        ITSAILOR, content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 0


@pytest.mark.usefixtures("schemas")
@pytest.mark.parametrize(
    "content_type",
    ["application/xml", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"],
)
async def test_other_content_types_are_415(client: httpx.AsyncClient, content_type: str) -> None:
    response = await client.post(
        ITSAILOR, content=json.dumps(event()), headers={"Content-Type": content_type}
    )
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.usefixtures("schemas")
@pytest.mark.parametrize(
    ("body", "pointer", "words"),
    [
        (event("save-selection", categories={"ads": True}), "/body/categories/ads", "unknown category"),
        (event("save-selection", categories={"necessary": False}), "/body/categories/necessary", "cannot be refused"),
        (event("reject-all", categories={"marketing": True}), "/body/categories/marketing", "turns every optional category off"),
        (event("accept-all", categories={"analytics": False}), "/body/categories/analytics", "turns every category on"),
        (event("save-selection"), "/body/categories", "needs categories"),
        # A key's "/" and "~" escaped as RFC 6901 says, in the detail too.
        (event("save-selection", categories={"a/b~c": True}), "/body/categories/a~1b~0c", "/body/categories/a~1b~0c: unknown category"),
        (event("accept-all", schema_version=2), "/body/schema_version", "newer than the current version 1"),
        ({**event(), "event_type": "maybe"}, "/body/event_type", "Input should be"),
        ({**event(), "subject_id": "not-a-uuid"}, "/body/subject_id", "UUID"),
        ({**event(), "colour": "red"}, "/body/colour", "Extra inputs"),
        (event(page_url="javascript:alert(1)"), "/body/page_url", "absolute http(s) URL"),
        ({"event_type": "accept-all", "schema_version": 1}, "/body/subject_id", "Field required"),
    ],
)  # fmt: skip
async def test_invalid_events_are_422_naming_the_field(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    body: dict[str, Any],
    pointer: str,
    words: str,
) -> None:
    response = await client.post(ITSAILOR, json=body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert pointer in [error["pointer"] for error in problem["errors"]]
    assert words in problem["detail"]
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 0


@pytest.mark.usefixtures("schemas")
@pytest.mark.parametrize(
    "raw", [b"", b"{", b"[]", b"null", b'{"subject_id": 1}', "\u00e9".encode("latin-1")]
)
async def test_malformed_bodies_are_422_never_500(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post(
        ITSAILOR, content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_unknown_property_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/properties/nosuch/consent-events", json=event())
    assert response.status_code == 404
    assert "nosuch" in response.json()["detail"]


@pytest.mark.usefixtures("schemas")
async def test_an_older_version_is_recorded_as_is(
    client: httpx.AsyncClient, db_url: str, db: asyncpg.Connection
) -> None:
    key = await api_key(db_url, "schemas:write")
    content = example("itsailor").model_dump(mode="json")
    content["categories"].append(
        {
            "key": "chat",
            "label": "Chat",
            "description": "Support chat.",
            "required": False,
            "cookies": [],
        }
    )
    published_v2 = await client.post(
        "/v1/properties/itsailor/schema/versions", json={"content": content}, headers=bearer(key)
    )
    assert published_v2.json()["version"] == 2
    late = await client.post(ITSAILOR, json=event("accept-all", schema_version=1))
    assert late.status_code == 201
    assert late.json()["schema_version"] == 1
    assert "chat" not in late.json()["choices"]  # judged by the version the banner showed
    current = await client.post(ITSAILOR, json=event("accept-all", schema_version=2))
    assert current.json()["choices"]["chat"] is True


@pytest.mark.usefixtures("schemas")
async def test_a_version_published_by_another_process_is_accepted_at_once(
    client: httpx.AsyncClient, db_url: str
) -> None:
    await client.get("/v1/properties/itsailor/schema")  # the pointer is now cached at 1
    changed = example("itsailor").model_dump(mode="json")
    changed["policy_url"] = "https://itsailor.io/cookies-v2"
    from service.consent_schema.document import ConsentSchemaDocument

    await published(db_url, ConsentSchemaDocument.model_validate(changed))  # not via this app
    response = await client.post(ITSAILOR, json=event(schema_version=2))
    assert response.status_code == 201


@pytest.mark.usefixtures("schemas")
async def test_user_id_is_stored_only_as_a_keyed_hash(
    client: httpx.AsyncClient, db: asyncpg.Connection, app: ConsentAPI
) -> None:
    body = event(user_id="customer-4711")
    response = await client.post(ITSAILOR, json=body)
    row = await stored(db, response.json()["event_id"])
    hasher: Hasher = services(app).hasher
    assert row["user_hash"] == hasher.user("customer-4711")
    assert "customer-4711" not in json.dumps({k: str(v) for k, v in row.items()})
    # The request hash covers the body, user_id in clear included: it is keyed too, so a dump's
    # row confirms no guessed account id (the plain SHA-256 of the body would).
    sent = ConsentEventIn.model_validate(body)
    assert row["request_hash"] == sent.request_hash("itsailor", hasher.current)
    plain = hashlib.sha256(
        b"itsailor\x00" + sent.model_dump_json(exclude_none=True, exclude={"event_id"}).encode()
    ).hexdigest()
    assert row["request_hash"] != plain


@pytest.mark.usefixtures("schemas")
async def test_a_retry_across_a_key_rotation_or_of_an_unkeyed_original_is_a_retry(
    db_url: str, tmp_path: Path, app: ConsentAPI, client: httpx.AsyncClient
) -> None:
    """An original stored under the key before a rotation, and one stored with the plain hash of
    releases before the request hash was keyed, are still found by a retry of the same body; a
    different body under the same id is still a 409."""
    body = event("save-selection", event_id=str(uuid.uuid4()), categories={"analytics": True})
    first = await client.post(ITSAILOR, json=body)
    assert first.status_code == 201
    # An original with the plain hash, recorded through the service's own writer.
    legacy = event("reject-all", event_id=str(uuid.uuid4()))
    state = services(app)
    sent = ConsentEventIn.model_validate(legacy)
    version = await state.catalog.version("itsailor", 1)
    new = new_event(
        sent, property_name="itsailor", version=version, headers={}, address=None,
        hasher=state.hasher, now=datetime.now(UTC),
    )  # fmt: skip
    plain = hashlib.sha256(
        b"itsailor\x00" + sent.model_dump_json(exclude_none=True, exclude={"event_id"}).encode()
    ).hexdigest()
    new.request_hash = plain
    assert (await state.writer.write(attach_leaf(new, version.content_hash))).created

    later = create_app(
        make_settings(
            db_url, tmp_path, ip_hash_salt=SecretStr("rotated-" + "k" * 40),
            ip_hash_previous_salts=[SecretStr(TEST_KEY)],
        )
    )  # fmt: skip
    async with later.router.lifespan_context(later), _client_for(later, CLIENT_IP) as rotated:
        retry = await rotated.post(ITSAILOR, json=body)
        assert retry.status_code == 200, retry.text
        assert retry.json()["event_id"] == body["event_id"]
        again = await rotated.post(ITSAILOR, json=legacy)
        assert again.status_code == 200, again.text
        other = await rotated.post(ITSAILOR, json={**legacy, "event_type": "accept-all"})
        assert other.status_code == 409, other.text


@pytest.mark.usefixtures("schemas")
async def test_every_acknowledged_event_is_committed(
    client: httpx.AsyncClient, db_url: str
) -> None:
    """Each 2xx is visible at once to another connection, however many arrive together."""

    async def post_and_check(index: int) -> str:
        body = event("save-selection", categories={"analytics": index % 2 == 0})
        response = await client.post(ITSAILOR, json=body)
        assert response.status_code == 201
        event_id = response.json()["event_id"]
        connection = await asyncpg.connect(db_url)
        try:
            found = await connection.fetchval(
                "SELECT count(*) FROM consent_events WHERE event_id = $1", uuid.UUID(event_id)
            )
        finally:
            await connection.close()
        assert found == 1
        return str(event_id)

    ids = await asyncio.gather(*(post_and_check(i) for i in range(60)))
    assert len(set(ids)) == 60


@pytest.mark.usefixtures("schemas")
async def test_a_request_caught_by_the_shutdown_is_503_not_500(
    app: ConsentAPI, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    # uvicorn finishes open requests before the lifespan closes the writer and the reader; one
    # that still arrives (a graceful-shutdown timeout) is told to come back, and nothing is kept.
    await services(app).writer.close()
    await services(app).decisions.close()
    subject = uuid.uuid4()
    answers = [
        await client.post(ITSAILOR, json=event("accept-all", subject_id=subject)),
        await client.get(f"/v1/properties/itsailor/consents/{subject}"),
    ]
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["retry-after"]
        assert answer.json()["detail"] == "the service is shutting down"
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 0

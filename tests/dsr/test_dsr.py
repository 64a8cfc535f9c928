"""Data-subject requests: look-ups, exports, erasures and their audit trail (docs/guarantees.md:
"Evidence is self-contained", "Erasure is complete")."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from service.app import create_app
from service.consent_schema.document import ConsentSchemaDocument, canonical_json, content_hash
from service.core.pipeline import ConsentAPI
from service.dsr.service import ExportPlan
from service.state import of as services
from tests.conftest import CLIENT_IP, TEST_KEY, make_settings
from tests.core.test_privacy_store import pg_dump
from tests.factories import api_key, bearer, bulk_events, event, example, published

EVENTS = "/v1/properties/itsailor/consent-events"
ALL_SCOPES = ("dsr:read", "dsr:erase", "audit:read", "schemas:write")


@pytest.fixture
async def keys(db_url: str) -> dict[str, dict[str, str]]:
    await published(db_url, example("itsailor"))
    await published(db_url, example("ailabrix"))
    return {
        "read": bearer(await api_key(db_url, "dsr:read")),
        "erase": bearer(await api_key(db_url, "dsr:erase")),
        "audit": bearer(await api_key(db_url, "audit:read")),
    }


async def post(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], headers: dict[str, str]
) -> httpx.Response:
    return await client.post(path, json=body, headers=headers)


async def record(
    client: httpx.AsyncClient, subject: uuid.UUID, event_type: str = "accept-all", **fields: Any
) -> dict[str, Any]:
    response = await client.post(EVENTS, json=event(event_type, subject_id=subject, **fields))
    assert response.status_code == 201, response.text
    # The record, without the receipt only the banner gets (docs/evidence.md).
    return {k: v for k, v in response.json().items() if not k.startswith("receipt")}


# --- authorisation ----------------------------------------------------------------------------

ENDPOINTS = [
    ("POST", "/v1/dsr/history", "dsr:read"),
    ("POST", "/v1/dsr/exports", "dsr:read"),
    ("POST", "/v1/dsr/erasures", "dsr:erase"),
    # Counting what an erasure would take is a look-up: it needs both.
    ("POST", "/v1/dsr/erasures/preview", "dsr:erase dsr:read"),
    ("GET", "/v1/dsr/audit", "audit:read"),
]


@pytest.mark.parametrize(("method", "path", "scope"), ENDPOINTS)
async def test_authorisation_matrix(
    client: httpx.AsyncClient, db_url: str, method: str, path: str, scope: str
) -> None:
    await published(db_url, example("itsailor"))
    scopes = scope.split()
    right = await api_key(db_url, *scopes)
    revoked = await api_key(db_url, *scopes, revoked=True)
    body = {"subject_id": str(uuid.uuid4())}

    async def call(headers: dict[str, str]) -> httpx.Response:
        if method == "GET":
            return await client.get(path, headers=headers)
        return await client.post(path, json=body, headers=headers)

    assert (await call({})).status_code == 401
    assert (await call(bearer(revoked))).status_code == 401
    for needed in scopes:
        wrong = await api_key(db_url, *(s for s in ALL_SCOPES if s != needed))
        forbidden = await call(bearer(wrong))
        assert forbidden.status_code == 403
        assert needed in forbidden.json()["detail"]
    assert (await call(bearer(right))).status_code == 200


# --- history ------------------------------------------------------------------------------------


async def test_history_by_each_identifier(
    client: httpx.AsyncClient, keys: dict[str, dict[str, str]]
) -> None:
    subject = uuid.uuid4()
    mine = [
        await record(client, subject, user_id="acct-1", page_url="https://example.com/a?q=1"),
        await record(client, subject, "withdraw"),
    ]
    await record(client, uuid.uuid4())  # someone else, same IP

    by_subject = (
        await post(client, "/v1/dsr/history", {"subject_id": str(subject)}, keys["read"])
    ).json()
    # The same records the banner got back, and where and in what browser they were made.
    browser = client.headers["user-agent"]
    assert by_subject["items"] == [
        {**mine[0], "page_url": "https://example.com/a", "user_agent": browser},
        {**mine[1], "page_url": None, "user_agent": browser},
    ]
    assert by_subject["next_cursor"] is None

    by_user = (await post(client, "/v1/dsr/history", {"user_id": "acct-1"}, keys["read"])).json()
    assert [item["event_id"] for item in by_user["items"]] == [mine[0]["event_id"]]

    by_ip = (await post(client, "/v1/dsr/history", {"ip": CLIENT_IP}, keys["read"])).json()
    assert len(by_ip["items"]) == 3
    mapped = (
        await post(client, "/v1/dsr/history", {"ip": f"::ffff:{CLIENT_IP}"}, keys["read"])
    ).json()
    assert len(mapped["items"]) == 3


async def test_a_property_that_does_not_exist_is_a_404_not_an_empty_answer(
    client: httpx.AsyncClient, keys: dict[str, dict[str, str]], db_url: str
) -> None:
    """A typo must not read as "we hold nothing about this person"."""
    subject = uuid.uuid4()
    await record(client, subject)
    withdraw = bearer(await api_key(db_url, "dsr:withdraw"))
    query = {"subject_id": str(subject), "property": "itsailr"}
    for path, key in (
        ("/v1/dsr/history", keys["read"]),
        ("/v1/dsr/exports", keys["read"]),
        ("/v1/dsr/erasures", keys["erase"]),
        ("/v1/dsr/withdrawals", withdraw),
    ):
        body = {**query, "reference": "R-1"} if path.endswith("withdrawals") else query
        response = await post(client, path, body, key)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["detail"] == "there is no property named 'itsailr'"
    audit = await client.get("/v1/dsr/audit", headers=keys["audit"])
    assert audit.json()["items"] == []  # nothing was looked up, exported or erased
    history = await post(client, "/v1/dsr/history", {"subject_id": str(subject)}, keys["read"])
    assert len(history.json()["items"]) == 1


async def test_history_narrowed_by_property_and_time(
    client: httpx.AsyncClient, keys: dict[str, dict[str, str]], app: ConsentAPI
) -> None:
    from tests.factories import Clock

    clock = Clock()
    services(app).clock = clock
    subject = uuid.uuid4()
    await record(client, subject)
    clock.advance(days=10)
    second = await record(client, subject, "withdraw")
    response = await client.post(
        "/v1/properties/ailabrix/consent-events", json=event(subject_id=subject)
    )
    assert response.status_code == 201

    only_itsailor = await post(
        client,
        "/v1/dsr/history",
        {"subject_id": str(subject), "property": "itsailor"},
        keys["read"],
    )
    assert len(only_itsailor.json()["items"]) == 2
    window = {
        "subject_id": str(subject),
        "property": "itsailor",
        "since": second["recorded_at"],
        "until": "2099-01-01T00:00:00Z",
    }
    assert [
        i["event_id"]
        for i in (await post(client, "/v1/dsr/history", window, keys["read"])).json()["items"]
    ] == [second["event_id"]]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({}, "/body"),
        ({"subject_id": str(uuid.uuid4()), "ip": "192.0.2.1"}, "/body"),
        ({"ip": "300.1.1.1"}, "/body/ip"),
        ({"subject_id": "nope"}, "/body/subject_id"),
        ({"subject_id": str(uuid.uuid4()), "since": "2026-01-01T00:00:00"}, "/body/since"),
        ({"subject_id": str(uuid.uuid4()), "limit": 0}, "/body/limit"),
        ({"subject_id": str(uuid.uuid4()), "cursor": "garbage!"}, "/body/cursor"),
        ({"subject_id": str(uuid.uuid4()), "email": "a@b.c"}, "/body/email"),
    ],
)
async def test_history_rejects_bad_requests_precisely(
    client: httpx.AsyncClient, keys: dict[str, dict[str, str]], body: dict[str, Any], pointer: str
) -> None:
    response = await post(client, "/v1/dsr/history", body, keys["read"])
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert pointer in [error["pointer"] for error in response.json()["errors"]]


async def test_a_cursor_only_continues_its_own_query(
    client: httpx.AsyncClient, keys: dict[str, dict[str, str]]
) -> None:
    subject = uuid.uuid4()
    for _ in range(3):
        await record(client, subject)
    first = (
        await post(
            client, "/v1/dsr/history", {"subject_id": str(subject), "limit": 2}, keys["read"]
        )
    ).json()
    assert len(first["items"]) == 2
    assert first["next_cursor"]
    other = await post(
        client,
        "/v1/dsr/history",
        {"subject_id": str(uuid.uuid4()), "cursor": first["next_cursor"]},
        keys["read"],
    )
    assert other.status_code == 422
    assert "for this query" in other.json()["detail"]
    rest = (
        await post(
            client,
            "/v1/dsr/history",
            {"subject_id": str(subject), "limit": 2, "cursor": first["next_cursor"]},
            keys["read"],
        )
    ).json()
    assert len(rest["items"]) == 1
    assert rest["next_cursor"] is None


async def test_ip_look_up_finds_records_made_under_a_previous_key(
    db_url: str, tmp_path: Path, keys: dict[str, dict[str, str]]
) -> None:
    old_key, new_key = TEST_KEY, "rotated-key-0123456789-abcdefghijklmnopqrstuv"
    subject = uuid.uuid4()
    before = create_app(make_settings(db_url, tmp_path))
    transport = httpx.ASGITransport(app=before, client=(CLIENT_IP, 1))
    async with (
        before.router.lifespan_context(before),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        await record(client, subject)
        old_key_id = services(before).hasher.current.key_id

    after = create_app(
        make_settings(
            db_url,
            tmp_path,
            ip_hash_salt=SecretStr(new_key),
            ip_hash_previous_salts=[SecretStr(old_key)],
        )
    )
    transport = httpx.ASGITransport(app=after, client=(CLIENT_IP, 1))
    async with (
        after.router.lifespan_context(after),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        await record(client, subject, "withdraw")
        assert services(after).hasher.current.key_id != old_key_id
        found = (await post(client, "/v1/dsr/history", {"ip": CLIENT_IP}, keys["read"])).json()[
            "items"
        ]
        assert [item["event_type"] for item in found] == ["accept-all", "withdraw"]
        erased = (await post(client, "/v1/dsr/erasures", {"ip": CLIENT_IP}, keys["erase"])).json()
        assert erased["deleted"] == 2


async def test_ten_thousand_events_page_completely_while_new_ones_arrive(
    client: httpx.AsyncClient, db_url: str, owner_url: str, keys: dict[str, dict[str, str]]
) -> None:
    subject = uuid.uuid4()
    await bulk_events(owner_url, count=10_000, property_name="itsailor", subject_id=subject)
    connection = await asyncpg.connect(db_url)
    original = {
        row["event_id"] for row in await connection.fetch("SELECT event_id FROM consent_events")
    }
    await connection.close()
    stop = asyncio.Event()

    async def arrive() -> int:
        sent = 0
        while not stop.is_set():
            await record(client, subject, "re-prompt")
            sent += 1
            await asyncio.sleep(0)
        return sent

    writer = asyncio.create_task(arrive())
    seen: list[str] = []
    cursor = None
    while True:
        body: dict[str, Any] = {"subject_id": str(subject), "limit": 700}
        if cursor:
            body["cursor"] = cursor
        page = (await post(client, "/v1/dsr/history", body, keys["read"])).json()
        seen += [item["event_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    stop.set()
    arrived = await writer
    assert arrived > 0
    assert len(seen) == len(set(seen)), "a page repeated an event"
    assert original <= {uuid.UUID(e) for e in seen}, (
        "an event that existed before paging was skipped"
    )


# --- exports ------------------------------------------------------------------------------------


async def three_versions(client: httpx.AsyncClient, db_url: str, subject: uuid.UUID) -> None:
    base = example("itsailor").model_dump(mode="json")
    for version in (1, 2, 3):
        if version > 1:
            base["categories"][0]["label"] = f"Necessary v{version}"
            await published(
                db_url, ConsentSchemaDocument.model_validate(base), material=version == 3
            )
        await record(
            client,
            subject,
            "save-selection",
            schema_version=version,
            categories={"analytics": True},
            user_id="acct-9",
        )


async def test_json_export_is_self_contained_evidence(
    client: httpx.AsyncClient, db_url: str, keys: dict[str, dict[str, str]]
) -> None:
    subject = uuid.uuid4()
    await three_versions(client, db_url, subject)
    response = await post(client, "/v1/dsr/exports", {"subject_id": str(subject)}, keys["read"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "attachment" in response.headers["content-disposition"]
    export = response.json()
    assert export["event_count"] == 3
    assert export["request_id"] == response.headers["x-request-id"]
    assert export["exported_at"]
    assert [e["schema_version"] for e in export["events"]] == [1, 2, 3]
    assert [(v["property"], v["version"]) for v in export["schema_versions"]] == [
        ("itsailor", 1),
        ("itsailor", 2),
        ("itsailor", 3),
    ]
    for version in export["schema_versions"]:
        assert (
            hashlib.sha256(canonical_json(version["content"])).hexdigest()
            == version["content_hash"]
        )
        assert content_hash(version["content"]) == version["content_hash"]
    by_version = {v["version"]: v["content_hash"] for v in export["schema_versions"]}
    for item in export["events"]:
        assert item["schema_content_hash"] == by_version[item["schema_version"]]
        assert item["ip_hash"]
        assert item["hash_key_id"]
        assert item["user_hash"]
        assert item["signals"] == {"gpc": False, "dnt": False, "applied": []}

    by_user = (await post(client, "/v1/dsr/exports", {"user_id": "acct-9"}, keys["read"])).json()
    assert by_user["query"]["identifier_type"] == "user_id"
    assert by_user["query"]["subject_id"] is None
    assert "acct-9" not in json.dumps(by_user["query"])
    assert len(by_user["query"]["searched_hashes"]) == 1


async def test_csv_export_has_one_row_per_event(
    client: httpx.AsyncClient, db_url: str, keys: dict[str, dict[str, str]]
) -> None:
    subject = uuid.uuid4()
    await three_versions(client, db_url, subject)
    response = await post(
        client, "/v1/dsr/exports", {"subject_id": str(subject), "format": "csv"}, keys["read"]
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 3
    assert [row["schema_version"] for row in rows] == ["1", "2", "3"]
    assert json.loads(rows[0]["choices"])["analytics"] is True
    assert all(row["subject_id"] == str(subject) for row in rows)
    assert {row["gpc"] for row in rows} | {row["dnt"] for row in rows} <= {"true", "false"}


async def json_export(
    app: ConsentAPI, subject: uuid.UUID
) -> tuple[ExportPlan, AsyncIterator[bytes]]:
    """A JSON export of a subject's events, opened as the route opens one (its audit aside)."""
    from service.dsr.bodies import ExportFormat, ExportRequest
    from service.dsr.export import open_export

    state = services(app)
    return await open_export(
        state.engine, state.catalog, state.hasher, ExportRequest(subject_id=subject),
        audit_id=uuid.uuid4(), export_format=ExportFormat.JSON, exported_at=state.clock(),
        request_id=None,
    )  # fmt: skip


async def test_a_large_export_streams_every_event(
    client: httpx.AsyncClient, owner_url: str, keys: dict[str, dict[str, str]], app: ConsentAPI
) -> None:
    subject = uuid.uuid4()
    await bulk_events(owner_url, count=2500, property_name="itsailor", subject_id=subject)
    response = await post(client, "/v1/dsr/exports", {"subject_id": str(subject)}, keys["read"])
    export = response.json()
    assert export["event_count"] == len(export["events"]) == 2500
    assert len({e["event_id"] for e in export["events"]}) == 2500

    # The body is produced piece by piece, a chunk of events at a time, never whole.
    from service.dsr.export import CHUNK

    plan, stream = await json_export(app, subject)
    assert plan.count == 2500
    pieces = [piece async for piece in stream]
    assert len(pieces) >= 2500 // CHUNK + 2
    assert max(len(piece) for piece in pieces) < len(b"".join(pieces)) / 2


async def test_an_export_counts_and_reads_its_events_in_one_snapshot(
    client: httpx.AsyncClient, owner_url: str, app: ConsentAPI, db_url: str
) -> None:
    """An erasure committed while an export is read, between two of its chunks: read in
    statements of their own, the file counted 2500 and held the first chunk's 1000 (a verifier
    reads that as a file cut short). Counted and read in one snapshot, it holds what it counts,
    and it holds one connection: the pool's others stay free for the erasure."""
    from service.dsr.export import CHUNK

    await published(db_url, example("itsailor"))
    subject = uuid.uuid4()
    await bulk_events(owner_url, count=2500, property_name="itsailor", subject_id=subject)
    eraser = bearer(await api_key(db_url, "dsr:erase"))
    plan, stream = await json_export(app, subject)
    pieces = [await anext(stream), await anext(stream)]  # the head, the first chunk
    erased = await client.post(
        "/v1/dsr/erasures", json={"subject_id": str(subject)}, headers=eraser
    )
    assert (erased.status_code, erased.json()["matched"]) == (200, 2500), erased.text
    pieces += [piece async for piece in stream]
    export = json.loads(b"".join(pieces))
    assert plan.count == export["event_count"] == len(export["events"]) == 2500 > CHUNK


async def test_exports_hold_one_connection_at_a_time(
    db_url: str, tmp_path: Path, keys: dict[str, dict[str, str]]
) -> None:
    """The look-up's audit and the export's snapshot each took a pooled connection, the first
    held until the second was had: on a pool of one an export waited for itself (a 503 after
    the command timeout), and concurrent exports on any pool could each hold one and wait."""
    app = create_app(make_settings(db_url, tmp_path, db_pool_size=1))
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1234))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        subject = uuid.uuid4()
        await record(client, subject)
        answers = await asyncio.wait_for(
            asyncio.gather(
                *(
                    client.post(
                        "/v1/dsr/exports", json={"subject_id": str(subject)}, headers=keys["read"]
                    )
                    for _ in range(3)
                )
            ),
            timeout=20,
        )
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert {answer.json()["event_count"] for answer in answers} == {1}


async def test_an_export_gives_its_connection_back_before_a_byte_is_sent(
    app: ConsentAPI, owner_url: str, db_url: str
) -> None:
    """Sent as it was read, an export held its pooled connection and its snapshot for as long
    as the client took to read it (forever, for one that reads nothing). The route reads it to
    the end first, into a spool, and sends it from there."""
    from service.core.fair_pool import FairPool
    from service.dsr.export import SPOOL_IN_MEMORY, spooled

    await published(db_url, example("itsailor"))
    subject = uuid.uuid4()
    await bulk_events(owner_url, count=2500, property_name="itsailor", subject_id=subject)
    pool = services(app).engine.pool
    assert isinstance(pool, FairPool)
    plan, stream = await json_export(app, subject)
    assert pool.checkedout() == 1  # the snapshot's, while it is read
    sending = await spooled(stream)
    assert pool.checkedout() == 0
    body = b"".join([piece async for piece in sending])
    assert len(body) < SPOOL_IN_MEMORY  # this one stayed in memory; a larger one goes to disk
    export = json.loads(body)
    assert plan.count == export["event_count"] == len(export["events"]) == 2500


async def test_an_export_that_cannot_be_spooled_is_a_503_that_names_it(
    client: httpx.AsyncClient,
    keys: dict[str, dict[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The temporary folder full or gone is the service's trouble, not the database's: a 503
    that says so (it said "the database cannot be reached")."""
    import tempfile

    import service.dsr.export

    subject = uuid.uuid4()
    await record(client, subject)
    monkeypatch.setattr(service.dsr.export, "SPOOL_IN_MEMORY", 10)  # to disk at once
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))
    response = await post(client, "/v1/dsr/exports", {"subject_id": str(subject)}, keys["read"])
    assert response.status_code == 503
    assert response.json()["detail"] == (
        "the export could not be held in a temporary file; retry later"
    )


# --- erasure ------------------------------------------------------------------------------------


async def test_delete_erasure_is_complete_and_idempotent(
    client: httpx.AsyncClient,
    db_url: str,
    owner_url: str,
    db: asyncpg.Connection,
    keys: dict[str, dict[str, str]],
    app: ConsentAPI,
) -> None:
    subject = uuid.uuid4()
    await three_versions(client, db_url, subject)
    bystander = await record(client, uuid.uuid4())
    ip_hash = services(app).hasher.ip(CLIENT_IP)
    user_hash = services(app).hasher.user("acct-9")
    assert user_hash is not None
    assert str(subject) in pg_dump(owner_url)
    erased_ids = [
        str(row["event_id"])
        for row in await db.fetch(
            "SELECT event_id FROM consent_events WHERE subject_id = $1", subject
        )
    ]

    erased = await post(
        client,
        "/v1/dsr/erasures",
        {"subject_id": str(subject), "reference": "DSR-2026-0042"},
        keys["erase"],
    )
    assert erased.status_code == 200
    result = erased.json()
    assert (result["mode"], result["matched"], result["deleted"], result["anonymised"]) == (
        "delete",
        3,
        3,
        0,
    )

    dump = pg_dump(owner_url)
    assert str(subject) not in dump
    assert user_hash not in dump
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 1  # the bystander stays
    assert bystander["event_id"] in dump
    audit = await db.fetchrow(
        "SELECT * FROM dsr_audit WHERE id = $1", uuid.UUID(result["erasure_id"])
    )
    assert audit["action"] == "erasure"
    assert audit["reference"] == "DSR-2026-0042"
    assert str(subject) not in json.dumps({k: str(v) for k, v in audit.items()})
    assert audit["identifier_hash"].hex() not in (ip_hash, user_hash)
    # Nothing of the events is left, not even their ids; the audit row keeps one token (a keyed
    # hash of the subject id under a label of its own) for a restore to erase again.
    assert len(erased_ids) == 3
    assert all(event_id not in dump for event_id in erased_ids)
    assert len(audit["erasure_tokens"]) == 1
    assert audit["erasure_tokens"][0] not in (audit["identifier_hash"].hex(), str(subject))

    again = (
        await post(client, "/v1/dsr/erasures", {"subject_id": str(subject)}, keys["erase"])
    ).json()
    assert (again["matched"], again["deleted"]) == (0, 0)
    assert pg_dump(owner_url).replace(again["erasure_id"], "").count(
        "consent_events"
    ) == dump.count("consent_events")

    # The IP, shared with the bystander, and the account id go the same way.
    by_ip = (await post(client, "/v1/dsr/erasures", {"ip": CLIENT_IP}, keys["erase"])).json()
    assert by_ip["deleted"] == 1
    assert ip_hash not in pg_dump(owner_url)


async def test_anonymise_keeps_rows_and_clears_every_identifying_column(
    client: httpx.AsyncClient,
    db_url: str,
    owner_url: str,
    db: asyncpg.Connection,
    keys: dict[str, dict[str, str]],
) -> None:
    subject = uuid.uuid4()
    await record(
        client,
        subject,
        user_id="acct-2",
        page_url="https://itsailor.io/x",
        tcf_string="CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA",
        gpp_string="DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA",
    )
    withdrawal = event("withdraw", subject_id=subject, event_id=str(uuid.uuid4()))
    assert (await client.post(EVENTS, json=withdrawal)).status_code == 201
    result = (
        await post(
            client,
            "/v1/dsr/erasures",
            {"subject_id": str(subject), "mode": "anonymise"},
            keys["erase"],
        )
    ).json()
    assert (result["matched"], result["anonymised"], result["deleted"]) == (2, 2, 0)
    rows = await db.fetch("SELECT * FROM consent_events")
    assert len(rows) == 2
    for row in rows:
        for column in (
            "subject_id",
            "ip_hash",
            "user_hash",
            "hash_key_id",
            "user_agent",
            "page_url",
            "tcf_string",
            "gpp_string",
            "request_hash",
        ):
            assert row[column] is None, column
        assert row["anonymised_at"] is not None
        assert row["event_type"] in {"accept-all", "withdraw"}  # statistics survive
        assert json.loads(row["choices"])["necessary"] is True
    dump = pg_dump(owner_url)
    assert str(subject) not in dump
    again = (
        await post(
            client,
            "/v1/dsr/erasures",
            {"subject_id": str(subject), "mode": "anonymise"},
            keys["erase"],
        )
    ).json()
    assert again["matched"] == 0
    # Its id stays with the anonymised row: a resend is not stored again, and told why.
    resent = await client.post(EVENTS, json=withdrawal)
    assert resent.status_code == 409
    assert "anonymised by an erasure since" in resent.json()["detail"]


# --- audit trail --------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["+2", "02", " 2", "2.0", "2_0", "0", "1001", "two"])
async def test_an_audit_page_size_is_a_decimal_number_from_1_to_1000(
    client: httpx.AsyncClient, keys: dict[str, dict[str, str]], limit: str
) -> None:
    answer = await client.get("/v1/dsr/audit", params={"limit": limit}, headers=keys["audit"])
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["pointer"] == "/query/limit"


async def test_every_dsr_action_is_audited_without_the_identifier(
    client: httpx.AsyncClient,
    db_url: str,
    owner_url: str,
    db: asyncpg.Connection,
    keys: dict[str, dict[str, str]],
) -> None:
    await record(client, uuid.uuid4(), user_id="acct-audit")
    await post(client, "/v1/dsr/history", {"ip": CLIENT_IP, "property": "itsailor"}, keys["read"])
    await post(client, "/v1/dsr/exports", {"user_id": "acct-audit", "format": "csv"}, keys["read"])
    await post(
        client,
        "/v1/dsr/erasures",
        {"user_id": "acct-audit", "mode": "anonymise", "reference": "T-1"},
        keys["erase"],
    )

    page = (await client.get("/v1/dsr/audit?limit=2", headers=keys["audit"])).json()
    assert [item["action"] for item in page["items"]] == ["erasure", "export"]
    rest = (
        await client.get(
            f"/v1/dsr/audit?limit=2&cursor={page['next_cursor']}", headers=keys["audit"]
        )
    ).json()
    assert [item["action"] for item in rest["items"]] == ["history"]
    assert rest["next_cursor"] is None
    history, export, erasure = rest["items"][0], page["items"][1], page["items"][0]
    assert (history["identifier_type"], history["property"], history["matched"]) == (
        "ip",
        "itsailor",
        1,
    )
    assert (export["identifier_type"], export["matched"]) == ("user_id", 1)
    assert (erasure["mode"], erasure["anonymised"], erasure["reference"]) == ("anonymise", 1, "T-1")
    key_ids = {row["id"] for row in await db.fetch("SELECT id FROM api_keys")}
    assert {item["actor"] for item in page["items"] + rest["items"]} <= key_ids
    assert all(item["request_id"] for item in page["items"] + rest["items"])

    audit_text = json.dumps(
        [dict(r) for r in await db.fetch("SELECT * FROM dsr_audit")], default=str
    )
    assert CLIENT_IP not in audit_text
    assert "acct-audit" not in audit_text
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
        await db.execute("DELETE FROM dsr_audit")

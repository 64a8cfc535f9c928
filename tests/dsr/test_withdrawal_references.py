"""A written withdrawal's `reference` is its idempotency key for the identifier it names
(docs/policies.md, "Retries"): a retry after a timeout answers the withdrawal recorded first and
duplicates no evidence; the same reference asking for something else is a 409."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from service.app import create_app
from tests.conftest import CLIENT_IP, TEST_KEY, make_settings
from tests.factories import accepted_by_the_owner, api_key, bearer, event, example, published

WITHDRAWALS = "/v1/dsr/withdrawals"
COUNTS = """
SELECT (SELECT count(*) FROM consent_events WHERE source = 'dsr') AS events,
       (SELECT count(*) FROM dsr_audit WHERE action = 'withdrawal') AS withdrawals,
       (SELECT count(*) FROM dsr_audit WHERE action = 'withdrawal-replayed') AS replays,
       (SELECT count(*) FROM dsr_audit) AS audit_rows
"""


@pytest.fixture
async def key(db_url: str) -> tuple[str, dict[str, str]]:
    await published(db_url, example("itsailor"))
    await published(db_url, example("ailabrix"))
    created = await api_key(db_url, "dsr:withdraw")
    return created.id, bearer(created)


async def decide(client: httpx.AsyncClient, prop: str, subject: uuid.UUID, **fields: Any) -> None:
    response = await client.post(
        f"/v1/properties/{prop}/consent-events",
        json=event("accept-all", subject_id=subject, **fields),
    )
    assert response.status_code == 201, response.text


async def counts(db: asyncpg.Connection) -> dict[str, int]:
    row = await db.fetchrow(COUNTS)
    assert row is not None
    return dict(row)


async def two_devices(client: httpx.AsyncClient) -> tuple[uuid.UUID, uuid.UUID]:
    """customer-42 decided on itsailor from a laptop and on both properties from a phone."""
    laptop, phone = uuid.uuid4(), uuid.uuid4()
    await decide(client, "itsailor", laptop, user_id="customer-42")
    await decide(client, "itsailor", phone, user_id="customer-42")
    await decide(client, "ailabrix", phone, user_id="customer-42")
    return laptop, phone


async def test_a_retry_answers_the_first_withdrawal_and_records_nothing_again(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    db_url: str,
    key: tuple[str, dict[str, str]],
) -> None:
    key_id, headers = key
    await two_devices(client)
    body = {"user_id": "customer-42", "reference": "DSR-2026-118"}

    first = await client.post(WITHDRAWALS, json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert first.json()["withdrawn"] == 3
    assert await counts(db) == {"events": 3, "withdrawals": 1, "replays": 0, "audit_rows": 1}

    retry = await client.post(WITHDRAWALS, json=body, headers=headers)
    assert retry.status_code == 200, retry.text
    assert retry.headers["Cache-Control"] == "no-store"
    assert retry.json() == first.json()  # the same id, count and items, read back
    # No event and no withdrawal again: only the retry's own audit row, a look-up of what it showed.
    assert await counts(db) == {"events": 3, "withdrawals": 1, "replays": 1, "audit_rows": 2}
    replay = await db.fetchrow("SELECT * FROM dsr_audit WHERE action = 'withdrawal-replayed'")
    withdrawal = await db.fetchrow("SELECT * FROM dsr_audit WHERE action = 'withdrawal'")
    assert replay is not None
    assert withdrawal is not None
    assert replay["id"] != withdrawal["id"]
    assert (replay["actor"], replay["reference"], replay["matched"]) == (key_id, "DSR-2026-118", 3)
    assert (replay["identifier_type"], replay["identifier_hash"]) == (
        withdrawal["identifier_type"],
        withdrawal["identifier_hash"],
    )

    audit = bearer(await api_key(db_url, "audit:read"))
    entries = (await client.get("/v1/dsr/audit", headers=audit)).json()["items"]
    assert [e["action"] for e in entries] == ["withdrawal-replayed", "withdrawal"]


async def test_a_retry_shows_what_is_still_stored_not_what_was_recorded(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    db_url: str,
    key: tuple[str, dict[str, str]],
) -> None:
    """The answer to a retry is read back from the events: one erased since is not shown, and
    nothing is invented to stand in for it."""
    _, headers = key
    laptop, phone = await two_devices(client)
    body = {"user_id": "customer-42", "reference": "T-3"}
    first = (await client.post(WITHDRAWALS, json=body, headers=headers)).json()
    eraser = bearer(await api_key(db_url, "dsr:erase"))
    erased = await client.post("/v1/dsr/erasures", json={"subject_id": str(laptop)}, headers=eraser)
    assert erased.json()["deleted"] == 2  # the laptop's click and its withdrawal

    retry = await client.post(WITHDRAWALS, json=body, headers=headers)
    assert retry.status_code == 200, retry.text
    answer = retry.json()
    assert (answer["withdrawal_id"], answer["withdrawn"]) == (first["withdrawal_id"], 3)
    assert answer["items"] == [i for i in first["items"] if i["subject_id"] == str(phone)]
    assert len(answer["items"]) == 2
    assert (
        await db.fetchval("SELECT matched FROM dsr_audit WHERE action = 'withdrawal-replayed'") == 2
    )
    assert await db.fetchval("SELECT count(*) FROM consent_events WHERE source = 'dsr'") == 2


async def test_a_retry_shows_its_own_withdrawal_only(
    client: httpx.AsyncClient, db: asyncpg.Connection, key: tuple[str, dict[str, str]]
) -> None:
    """An earlier withdrawal under another ticket also left `withdraw` events of the DSR team for
    the account: a retry shows none of them."""
    _, headers = key
    await two_devices(client)
    earlier = await client.post(
        WITHDRAWALS,
        json={"user_id": "customer-42", "property": "ailabrix", "reference": "T-1"},
        headers=headers,
    )
    assert earlier.json()["withdrawn"] == 1
    body = {"user_id": "customer-42", "reference": "T-2"}
    first = await client.post(WITHDRAWALS, json=body, headers=headers)
    assert first.json()["withdrawn"] == 3
    retry = await client.post(WITHDRAWALS, json=body, headers=headers)
    assert (retry.status_code, retry.json()) == (200, first.json())
    assert await counts(db) == {"events": 4, "withdrawals": 2, "replays": 1, "audit_rows": 3}


@pytest.mark.parametrize(
    "reference",
    ["DSR-7 ", " DSR-7", "   ", "", "\u202eDSR-7", "DSR\u200b-7", "DSR-7\n", "DSR\x00-7"],
)
async def test_a_reference_has_one_spelling(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    db_url: str,
    key: tuple[str, dict[str, str]],
    reference: str,
) -> None:
    """A reference is a key: "DSR-7 " or one with a bidi override would be a second key for a
    ticket that reads as "DSR-7" in the audit, so they are refused, not tidied (tidied, they
    would still differ from the keys stored before). The erasure's reference is read the same
    way. Nothing is recorded."""
    _, headers = key
    await two_devices(client)
    before = await counts(db)
    eraser = bearer(await api_key(db_url, "dsr:erase"))
    for path, body, auth in (
        (WITHDRAWALS, {"user_id": "customer-42", "reference": reference}, headers),
        ("/v1/dsr/erasures", {"user_id": "customer-42", "reference": reference}, eraser),
    ):
        response = await client.post(path, json=body, headers=auth)
        assert response.status_code == 422, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert [error["pointer"] for error in response.json()["errors"]] == ["/body/reference"]
    assert await counts(db) == before
    assert await db.fetchval("SELECT count(*) FROM consent_events WHERE source = 'banner'") == 3


@pytest.mark.parametrize(
    ("first", "second", "asked"),
    [
        (
            {},
            {"property": "itsailor"},
            "on every property; this request asks for property 'itsailor'",
        ),
        (
            {"property": "ailabrix"},
            {},
            "on property 'ailabrix'; this request asks for every property",
        ),
        (
            {"property": "ailabrix"},
            {"property": "itsailor"},
            "on property 'ailabrix'; this request asks for property 'itsailor'",
        ),
    ],
)
async def test_the_same_reference_asking_for_another_property_is_a_409(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    key: tuple[str, dict[str, str]],
    first: dict[str, str],
    second: dict[str, str],
    asked: str,
) -> None:
    _, headers = key
    await two_devices(client)
    body = {"user_id": "customer-42", "reference": "DSR-7"}
    recorded = await client.post(WITHDRAWALS, json=body | first, headers=headers)
    assert recorded.status_code == 201, recorded.text
    before = await counts(db)

    conflict = await client.post(WITHDRAWALS, json=body | second, headers=headers)
    assert conflict.status_code == 409, conflict.text
    assert conflict.headers["Content-Type"] == "application/problem+json"
    problem = conflict.json()
    withdrawal_id = recorded.json()["withdrawal_id"]
    assert problem["type"] == "https://consent-service.dev/problems/reference-conflict"
    assert problem["detail"] == (
        f"reference 'DSR-7' is already withdrawal {withdrawal_id}, for this user_id {asked}. A "
        "retry must repeat the request; another withdrawal needs a reference of its own"
    )
    assert problem["withdrawal_id"] == withdrawal_id
    assert "customer-42" not in conflict.text
    assert await counts(db) == before  # nothing recorded, nothing audited


async def test_the_same_ticket_for_another_identifier_is_another_withdrawal(
    client: httpx.AsyncClient, db: asyncpg.Connection, key: tuple[str, dict[str, str]]
) -> None:
    """One letter may name an account and a cookie's id: one ticket, two withdrawals."""
    _, headers = key
    cookie = uuid.uuid4()
    await two_devices(client)
    await decide(client, "itsailor", cookie)
    by_account = await client.post(
        WITHDRAWALS, json={"user_id": "customer-42", "reference": "LETTER-9"}, headers=headers
    )
    by_cookie = await client.post(
        WITHDRAWALS, json={"subject_id": str(cookie), "reference": "LETTER-9"}, headers=headers
    )
    assert (by_account.status_code, by_cookie.status_code) == (201, 201)
    assert by_account.json()["withdrawal_id"] != by_cookie.json()["withdrawal_id"]
    assert await counts(db) == {"events": 4, "withdrawals": 2, "replays": 0, "audit_rows": 2}


async def test_identical_requests_at_once_record_once(
    client: httpx.AsyncClient, db: asyncpg.Connection, key: tuple[str, dict[str, str]]
) -> None:
    _, headers = key
    await two_devices(client)
    body = {"user_id": "customer-42", "reference": "DSR-RACE"}

    answers = await asyncio.gather(
        *(client.post(WITHDRAWALS, json=body, headers=headers) for _ in range(3))
    )

    assert sorted(a.status_code for a in answers) == [200, 200, 201], [a.text for a in answers]
    assert len({a.json()["withdrawal_id"] for a in answers}) == 1
    assert all(a.json() == answers[0].json() for a in answers)
    assert await counts(db) == {"events": 3, "withdrawals": 1, "replays": 2, "audit_rows": 3}


async def test_a_reference_an_erasure_used_does_not_block_a_withdrawal(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    db_url: str,
    key: tuple[str, dict[str, str]],
) -> None:
    """References are keys among withdrawals only: a ticket answered by an erasure of part of the
    records, then by a withdrawal of the rest, records both."""
    _, headers = key
    await two_devices(client)
    eraser = bearer(await api_key(db_url, "dsr:erase"))
    erased = await client.post(
        "/v1/dsr/erasures",
        json={"user_id": "customer-42", "property": "ailabrix", "reference": "DSR-12"},
        headers=eraser,
    )
    assert erased.json()["deleted"] == 1

    withdrawn = await client.post(
        WITHDRAWALS, json={"user_id": "customer-42", "reference": "DSR-12"}, headers=headers
    )
    assert withdrawn.status_code == 201, withdrawn.text
    assert withdrawn.json()["withdrawn"] == 2
    assert await counts(db) == {"events": 2, "withdrawals": 1, "replays": 0, "audit_rows": 2}


async def test_a_retry_after_a_key_rotation_still_finds_the_withdrawal(
    db_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """The audit row keeps the account's hash under the key of its day; the retry hashes it
    under every configured key."""
    await published(db_url, example("itsailor"))
    headers = bearer(await api_key(db_url, "dsr:withdraw"))
    body = {"user_id": "customer-42", "reference": "DSR-ROT"}
    rotated = make_settings(
        db_url,
        tmp_path,
        ip_hash_salt=SecretStr("rotated-key-0123456789-abcdefghijklmnopqrstuv"),
        ip_hash_previous_salts=[SecretStr(TEST_KEY)],
    )
    answers: list[httpx.Response] = []
    for settings in (make_settings(db_url, tmp_path), rotated):
        app = create_app(settings)
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            if not answers:
                await decide(client, "itsailor", uuid.uuid4(), user_id="customer-42")
            answers.append(await client.post(WITHDRAWALS, json=body, headers=headers))
    assert [a.status_code for a in answers] == [201, 200]
    assert answers[1].json() == answers[0].json()
    assert await counts(db) == {"events": 1, "withdrawals": 1, "replays": 1, "audit_rows": 2}
    assert await db.fetchval("SELECT count(DISTINCT hash_key_id) FROM dsr_audit") == 2


async def test_a_reference_recorded_twice_before_the_fix_answers_the_first(
    client: httpx.AsyncClient, db: asyncpg.Connection, key: tuple[str, dict[str, str]]
) -> None:
    """Withdrawals the defect recorded twice stay (audit rows are immutable; migration 0019 adds
    no unique index over them): a retry answers the first of them."""
    _, headers = key
    await two_devices(client)
    body = {"user_id": "customer-42", "reference": "OLD-1"}
    first = (await client.post(WITHDRAWALS, json=body, headers=headers)).json()
    # The second row the defect wrote: the same request, recorded again under another id.
    await db.execute(
        "INSERT INTO dsr_audit (id, action, actor, identifier_type, identifier_hash, hash_key_id,"
        " property, reference, matched, deleted, anonymised)"
        " SELECT gen_random_uuid(), action, actor, identifier_type, identifier_hash, hash_key_id,"
        " property, reference, matched, deleted, anonymised FROM dsr_audit"
    )
    retry = await client.post(WITHDRAWALS, json=body, headers=headers)
    assert retry.status_code == 200, retry.text
    assert retry.json() == first


async def test_migration_0019_indexes_withdrawal_references_over_existing_duplicates(
    server_url: str,
) -> None:
    """Built over a trail that already holds a reference twice (the defect's rows stay), used by
    the look-up, and dropped again by the downgrade; the service's role gains no privilege."""
    from alembic import command

    from service.core.migrations import alembic_config
    from tests.conftest import database_at

    index = "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_dsr_audit_withdrawal_reference'"
    async with database_at(server_url, "0018") as owner_url:
        db = await asyncpg.connect(owner_url)
        try:
            await db.execute(
                "INSERT INTO dsr_audit (id, action, actor, identifier_type, identifier_hash,"
                " hash_key_id, reference, matched, deleted, anonymised)"
                " SELECT gen_random_uuid(), 'withdrawal', 'key-1', 'user_id', repeat('a', 64),"
                " 'k1', 'T-1', 1, 0, 0 FROM generate_series(1, 2)"
            )
            config = alembic_config(owner_url)
            await asyncio.to_thread(command.upgrade, config, "0019")
            assert await db.fetchval(index) == (
                "CREATE INDEX ix_dsr_audit_withdrawal_reference ON public.dsr_audit"
                " USING btree (reference) WHERE (action = 'withdrawal'::text)"
            )
            assert await db.fetchval("SELECT count(*) FROM dsr_audit WHERE reference = 'T-1'") == 2
            privileges = await db.fetchval(
                "SELECT array_agg(privilege_type::text ORDER BY privilege_type)"
                " FROM information_schema.role_table_grants"
                " WHERE grantee = 'consent_api' AND table_name = 'dsr_audit'"
            )
            assert privileges == ["INSERT", "SELECT"]
            await asyncio.to_thread(command.downgrade, config, "0018")
            assert await db.fetchval(index) is None
        finally:
            await db.close()


def test_the_cli_answers_a_retry_with_the_first_withdrawal(
    db_url: str, owner_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's retry, after the API's or its own: the same object, said to be recorded
    already, and nothing recorded again."""
    from service.cli import app as cli

    async def count(query: str) -> int:
        conn = await asyncpg.connect(owner_url)
        try:
            return int(await conn.fetchval(query))
        finally:
            await conn.close()

    subject = asyncio.run(accepted_by_the_owner(db_url, owner_url))
    monkeypatch.setenv("CONSENT_DATABASE_URL", db_url)
    monkeypatch.setenv("CONSENT_IP_HASH_SALT", TEST_KEY)
    command = ["dsr", "withdraw", "--subject-id", str(subject), "--reference", "LETTER-3"]
    first = CliRunner().invoke(cli, [*command, "--json"])
    assert first.exit_code == 0, first.output
    assert "already recorded" not in first.stderr

    again = CliRunner().invoke(cli, [*command, "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == json.loads(first.stdout)
    withdrawal_id = json.loads(first.stdout)["withdrawal_id"]
    assert again.stderr == (
        f"already recorded: reference 'LETTER-3' is withdrawal {withdrawal_id}; nothing was "
        "recorded again\n"
    )
    plain = CliRunner().invoke(cli, command)
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.startswith(f"withdrawal {withdrawal_id}: 1 subject(s) and property(ies)")
    assert asyncio.run(count("SELECT count(*) FROM consent_events WHERE source = 'dsr'")) == 1
    assert asyncio.run(count("SELECT count(*) FROM dsr_audit WHERE action = 'withdrawal'")) == 1
    assert (
        asyncio.run(count("SELECT count(*) FROM dsr_audit WHERE action = 'withdrawal-replayed'"))
        == 2
    )

    erased = CliRunner().invoke(cli, ["dsr", "erase", "--subject-id", str(subject), "--yes"])
    assert erased.exit_code == 0, erased.output
    after = CliRunner().invoke(cli, command)
    assert after.exit_code == 0, after.output
    assert after.stderr.splitlines()[1] == (
        "only 0 of its 1 withdraw event(s) are still stored: the others were erased, or their "
        "subjects decided again since"
    )

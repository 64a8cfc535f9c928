"""Withdrawal in writing (docs/policies.md): itsailor lists "withdraw consent in writing" among
the requests to dsr@itsailor.io. The DSR team records it; the ledger then says `withdrawn`."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from tests.factories import accepted_by_the_owner, api_key, bearer, event, example, published

WITHDRAWALS = "/v1/dsr/withdrawals"


@pytest.fixture
async def withdrawer(db_url: str) -> tuple[str, dict[str, str]]:
    await published(db_url, example("itsailor"))
    await published(db_url, example("ailabrix"))
    key = await api_key(db_url, "dsr:withdraw")
    return key.id, bearer(key)


async def decide(client: httpx.AsyncClient, prop: str, subject: uuid.UUID, **fields: Any) -> None:
    response = await client.post(
        f"/v1/properties/{prop}/consent-events",
        json=event("accept-all", subject_id=subject, **fields),
    )
    assert response.status_code == 201, response.text


async def test_a_withdrawal_by_account_withdraws_every_linked_subject_with_an_audit_row(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    withdrawer: tuple[str, dict[str, str]],
) -> None:
    key_id, headers = withdrawer
    laptop, phone, stranger = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await decide(client, "itsailor", laptop, user_id="customer-42")
    await decide(client, "itsailor", phone, user_id="customer-42")
    await decide(client, "ailabrix", phone, user_id="customer-42")
    await decide(client, "itsailor", stranger, user_id="customer-7")

    response = await client.post(
        WITHDRAWALS, json={"user_id": "customer-42", "reference": "DSR-2026-118"}, headers=headers
    )
    assert response.status_code == 201, response.text  # 200: a retry (test_withdrawal_references)
    result = response.json()
    assert result["withdrawn"] == 3
    assert sorted((i["property"], i["subject_id"]) for i in result["items"]) == sorted(
        [("itsailor", str(laptop)), ("itsailor", str(phone)), ("ailabrix", str(phone))]
    )
    for item in result["items"]:
        assert (item["event_type"], item["source"], item["status"]) == (
            "withdraw",
            "dsr",
            "withdrawn",
        )
        assert not any(v for k, v in item["effective"].items() if k != "necessary")

    for prop, subject in (("itsailor", laptop), ("itsailor", phone), ("ailabrix", phone)):
        state = (await client.get(f"/v1/properties/{prop}/consents/{subject}")).json()
        assert (state["status"], state["source"]) == ("withdrawn", "dsr")
    untouched = (await client.get(f"/v1/properties/itsailor/consents/{stranger}")).json()
    assert untouched["status"] == "given"

    rows = await db.fetch("SELECT source, entered_by FROM consent_events WHERE source = 'dsr'")
    assert [tuple(r) for r in rows] == [("dsr", key_id)] * 3  # the key that entered them
    audit = await db.fetchrow("SELECT * FROM dsr_audit WHERE action = 'withdrawal'")
    assert audit is not None
    assert (audit["id"], audit["actor"], audit["identifier_type"], audit["reference"], audit["matched"]) == (
        uuid.UUID(result["withdrawal_id"]), key_id, "user_id", "DSR-2026-118", 3,
    )  # fmt: skip
    assert "customer-42" not in json.dumps(dict(audit), default=str)


async def test_a_withdrawal_is_found_by_the_identifier_it_was_asked_for(
    client: httpx.AsyncClient, db_url: str, withdrawer: tuple[str, dict[str, str]]
) -> None:
    _, headers = withdrawer
    subject = uuid.uuid4()
    await decide(client, "itsailor", subject, user_id="customer-42")
    await client.post(
        WITHDRAWALS,
        json={"user_id": "customer-42", "property": "itsailor", "reference": "T-1"},
        headers=headers,
    )
    reader = bearer(await api_key(db_url, "dsr:read"))
    history = await client.post("/v1/dsr/history", json={"user_id": "customer-42"}, headers=reader)
    assert [(i["event_type"], i["source"]) for i in history.json()["items"]] == [
        ("accept-all", "banner"),
        ("withdraw", "dsr"),
    ]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"ip": "198.51.100.4", "reference": "T"}, "not ip: an address is shared"),
        ({"subject_id": str(uuid.uuid4())}, "reference"),
        ({"subject_id": str(uuid.uuid4()), "reference": ""}, "reference"),
        (
            {"subject_id": str(uuid.uuid4()), "reference": "T", "since": "2026-01-01T00:00:00Z"},
            "no since or until",
        ),
    ],
)
async def test_a_withdrawal_needs_one_personal_identifier_and_a_reference(
    client: httpx.AsyncClient,
    withdrawer: tuple[str, dict[str, str]],
    body: dict[str, str],
    detail: str,
) -> None:
    response = await client.post(WITHDRAWALS, json=body, headers=withdrawer[1])
    assert response.status_code == 422
    assert detail in response.text


async def test_only_a_key_with_dsr_withdraw_may_withdraw(
    client: httpx.AsyncClient, db_url: str
) -> None:
    body = {"subject_id": str(uuid.uuid4()), "reference": "T"}
    assert (await client.post(WITHDRAWALS, json=body)).status_code == 401
    for scope in ("dsr:read", "dsr:erase"):
        headers = bearer(await api_key(db_url, scope))
        assert (await client.post(WITHDRAWALS, json=body, headers=headers)).status_code == 403


async def test_a_subject_with_no_decision_gets_nothing_but_the_request_is_audited(
    client: httpx.AsyncClient, db: asyncpg.Connection, withdrawer: tuple[str, dict[str, str]]
) -> None:
    response = await client.post(
        WITHDRAWALS,
        json={"subject_id": str(uuid.uuid4()), "reference": "T-9"},
        headers=withdrawer[1],
    )
    assert response.status_code == 201
    assert (response.json()["withdrawn"], response.json()["items"]) == (0, [])
    assert await db.fetchval("SELECT matched FROM dsr_audit WHERE action = 'withdrawal'") == 0
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 0


def test_the_cli_withdraws_with_actor_cli(
    db_url: str, owner_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from service.cli import app as cli
    from tests.conftest import TEST_KEY

    subject = asyncio.run(accepted_by_the_owner(db_url, owner_url))
    monkeypatch.setenv("CONSENT_DATABASE_URL", db_url)
    monkeypatch.setenv("CONSENT_IP_HASH_SALT", TEST_KEY)
    result = CliRunner().invoke(
        cli, ["dsr", "withdraw", "--subject-id", str(subject), "--reference", "LETTER-3", "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["withdrawn"] == 1
    assert out["items"][0]["source"] == "dsr"


async def test_an_erasure_also_removes_the_withdrawals_the_dsr_team_entered(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    db_url: str,
    owner_url: str,
    withdrawer: tuple[str, dict[str, str]],
) -> None:
    """Guarantee 5 (erasure is complete) over the rows a withdrawal adds: they carry the subject
    id and the account's keyed hash, and an erasure by the account leaves neither anywhere."""
    from tests.core.test_privacy_store import pg_dump

    subject = uuid.uuid4()
    await decide(client, "itsailor", subject, user_id="customer-42")
    answer = await client.post(
        WITHDRAWALS, json={"user_id": "customer-42", "reference": "T-5"}, headers=withdrawer[1]
    )
    assert answer.json()["withdrawn"] == 1
    eraser = bearer(await api_key(db_url, "dsr:erase"))
    erased = await client.post("/v1/dsr/erasures", json={"user_id": "customer-42"}, headers=eraser)
    assert erased.json()["deleted"] == 2  # the click and the withdrawal entered for it
    dump = pg_dump(owner_url)
    assert str(subject) not in dump
    assert "customer-42" not in dump
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 0

"""A withdrawal in writing is evidence like a banner's event (docs/evidence.md, "Receipts"): its
`withdraw` events share one signed receipt, which the `201` carries with each event's path, a
retry (`200`) gives again, an export shows and `ledger verify` checks; the CLI signs too."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from service.core.pipeline import ConsentAPI
from service.ledger.receipts import parse_seed, public_jwk
from service.state import of as services
from tests.conftest import TEST_KEY, TEST_RECEIPT_KEY
from tests.factories import accepted_by_the_owner, api_key, bearer, event, example, published
from tests.ledger.test_ledger import documented_leaf, ledger
from tests.ledger.test_receipts import path_leads_to_root, with_jwcrypto

WITHDRAWALS = "/v1/dsr/withdrawals"
STORED = (
    "SELECT e.*, v.content_sha256 FROM consent_events e JOIN consent_schema_versions v"
    " ON v.property = e.property AND v.version = e.schema_version WHERE event_id = $1"
)


async def signed_by_the_service(
    db: asyncpg.Connection, jwks: dict[str, Any], item: dict[str, Any], *, stored: bool = True
) -> dict[str, Any]:
    """The payload of the item's receipt, checked: it verifies, and its path leads from the
    stored event's documented leaf to the root it signs; kept with the event, if `stored`."""
    assert item["receipt"] is not None, item
    payload = with_jwcrypto(jwks, item["receipt"])
    proof = item["receipt_proof"]
    assert payload["tree_size"] == proof["tree_size"]
    assert path_leads_to_root(proof, payload["root"])
    row = await db.fetchrow(STORED, uuid.UUID(item["event_id"]))
    assert row is not None
    assert (row["receipt"] is not None) is stored
    assert proof["leaf"] == documented_leaf(row, row["content_sha256"]).hex()
    assert proof["salt"] == bytes(row["salt"]).hex()
    return payload


async def test_a_withdrawals_events_carry_a_receipt_in_the_answer_a_retry_and_an_export(
    client: httpx.AsyncClient, db: asyncpg.Connection, db_url: str
) -> None:
    await published(db_url, example("itsailor"))
    await published(db_url, example("ailabrix"))
    withdrawer = bearer(await api_key(db_url, "dsr:withdraw"))
    reader = bearer(await api_key(db_url, "dsr:read"))
    laptop, phone = uuid.uuid4(), uuid.uuid4()
    for prop, subject in (("itsailor", laptop), ("itsailor", phone), ("ailabrix", phone)):
        response = await client.post(
            f"/v1/properties/{prop}/consent-events",
            json=event("accept-all", subject_id=subject, user_id="customer-42"),
        )
        assert response.status_code == 201, response.text
    jwks = (await client.get("/.well-known/jwks.json")).json()
    request = {"user_id": "customer-42", "reference": "LETTER-2026-9"}

    first = await client.post(WITHDRAWALS, json=request, headers=withdrawer)
    assert first.status_code == 201, first.text
    items = first.json()["items"]
    assert len(items) == 3
    # One signature over the withdrawal's three leaves, as over a banner's group commit.
    assert len({item["receipt"] for item in items}) == 1
    assert sorted(item["receipt_proof"]["leaf_index"] for item in items) == [0, 1, 2]
    for item in items:
        assert (await signed_by_the_service(db, jwks, item))["tree_size"] == 3

    again = await client.post(WITHDRAWALS, json=request, headers=withdrawer)
    assert again.status_code == 200, again.text
    assert again.json()["items"] == items  # the same receipt and proofs, read back

    response = await client.post("/v1/dsr/exports", json={"subject_id": str(phone)}, headers=reader)
    assert response.status_code == 200
    exported = {
        item["event_id"]: item["receipt"]
        for item in json.loads(response.content)["events"]
        if item["source"] == "dsr"
    }
    assert len(exported) == 2
    for item in items:
        if item["subject_id"] == str(phone):
            proof = item["receipt_proof"]
            assert exported[item["event_id"]] == {
                "jws": item["receipt"],
                **{key: proof[key] for key in ("leaf_index", "tree_size", "path")},
            }
    code, out = await ledger(db_url, "verify")
    assert code == 0, out
    assert "4 receipts" in out  # three banner events' and the withdrawal's


async def test_a_withdrawal_is_recorded_even_if_its_receipt_cannot_be_signed(
    app: ConsentAPI,
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As a banner's batch: stored and answered without a receipt (docs/evidence.md)."""
    await published(db_url, example("itsailor"))
    withdrawer = bearer(await api_key(db_url, "dsr:withdraw"))
    subject = uuid.uuid4()
    response = await client.post(
        "/v1/properties/itsailor/consent-events", json=event("accept-all", subject_id=subject)
    )
    assert response.status_code == 201, response.text
    signer = services(app).writer.receipts
    assert signer is not None

    def broken(*_: object) -> None:
        raise RuntimeError("no key")

    monkeypatch.setattr(signer, "sign_batch", broken)
    answer = await client.post(
        WITHDRAWALS, json={"subject_id": str(subject), "reference": "T-9"}, headers=withdrawer
    )
    assert answer.status_code == 201, answer.text
    [item] = answer.json()["items"]
    assert (item["event_type"], item["receipt"], item["receipt_proof"]) == ("withdraw", None, None)
    assert await db.fetchval("SELECT count(*) FROM consent_events WHERE receipt IS NULL") == 1
    # A retry then gets a receipt of its own leaf, as a banner event's retry does.
    monkeypatch.undo()
    retry = await client.post(
        WITHDRAWALS, json={"subject_id": str(subject), "reference": "T-9"}, headers=withdrawer
    )
    assert retry.status_code == 200, retry.text
    [again] = retry.json()["items"]
    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert (await signed_by_the_service(db, jwks, again, stored=False))["tree_size"] == 1
    assert again["receipt_proof"]["path"] == []


def test_the_cli_signs_the_withdrawal_it_records(
    db_url: str, owner_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.cli import app as cli

    async def check(item: dict[str, Any]) -> None:
        db = await asyncpg.connect(db_url)
        try:
            jwks = {"keys": [public_jwk(parse_seed(TEST_RECEIPT_KEY).public_key())]}
            assert (await signed_by_the_service(db, jwks, item))["tree_size"] == 1
        finally:
            await db.close()

    subject = asyncio.run(accepted_by_the_owner(db_url, owner_url))
    monkeypatch.setenv("CONSENT_DATABASE_URL", db_url)
    monkeypatch.setenv("CONSENT_IP_HASH_SALT", TEST_KEY)
    monkeypatch.setenv("CONSENT_RECEIPT_KEY", TEST_RECEIPT_KEY)
    result = CliRunner().invoke(
        cli, ["dsr", "withdraw", "--subject-id", str(subject), "--reference", "LETTER-4", "--json"]
    )
    assert result.exit_code == 0, result.output
    [item] = json.loads(result.output)["items"]
    asyncio.run(check(item))

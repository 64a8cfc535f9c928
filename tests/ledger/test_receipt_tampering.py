"""A receipt is given again only as it was signed (docs/evidence.md, "Receipts"): when a superuser
has removed an event's stored receipt, or rewritten the event so its receipt no longer holds its
leaf, an export says so instead of showing `null` (which reads as "stored before receipts"), and
a retry gets no receipt signed now over what the row holds today. And an auditor checks the
receipts with the published JWK Set, holding none of the service's secrets."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from service.cli import app as cli
from service.core.pipeline import ConsentAPI
from service.ledger.receipts import public_jwk
from tests.factories import api_key, bearer, event, example, published
from tests.ledger.tampering import as_superuser
from tests.ledger.test_ledger import seal_now

EVENTS = "/v1/properties/itsailor/consent-events"


async def exported(
    client: httpx.AsyncClient, db_url: str, subject: uuid.UUID, export_format: str = "json"
) -> dict[str, Any]:
    reader = bearer(await api_key(db_url, "dsr:read"))
    response = await client.post(
        "/v1/dsr/exports",
        json={"subject_id": str(subject), "format": export_format},
        headers=reader,
    )
    assert response.status_code == 200, response.text
    document: dict[str, Any] = json.loads(response.content)
    return document


async def test_an_export_names_a_receipt_it_no_longer_holds(
    app: ConsentAPI, client: httpx.AsyncClient, db: asyncpg.Connection, db_url: str
) -> None:
    await published(db_url, example("itsailor"))
    subject = uuid.uuid4()
    sent = [
        (await client.post(EVENTS, json=event(kind, subject_id=subject))).json()
        for kind in ("accept-all", "reject-all")
    ]
    await seal_now(app)
    first, second = (uuid.UUID(item["event_id"]) for item in sent)
    receipt = await db.fetchval("SELECT receipt FROM consent_events WHERE event_id = $1", first)
    await as_superuser(
        db, "DELETE FROM ledger_receipts WHERE id = $1", receipt, tables=("ledger_receipts",)
    )
    # The second event rewritten with a leaf of its own: its receipt no longer holds it.
    await as_superuser(
        db, "UPDATE consent_events SET leaf = sha256(leaf) WHERE event_id = $1", second
    )

    events = {
        item["event_id"]: item for item in (await exported(client, db_url, subject))["events"]
    }
    gone, rewritten = events[str(first)]["receipt"], events[str(second)]["receipt"]
    assert gone == {
        "problem": f"receipt {receipt}, which the event names, is not stored: "
        "run consent-service ledger verify"
    }
    assert rewritten is not None
    assert "does not hold the event's leaf" in rewritten["problem"]
    assert "jws" not in rewritten
    # The DPV export says it too (it read the JWS and failed with a 500).
    records = [
        node
        for node in (await exported(client, db_url, subject, "dpv"))["@graph"]
        if "consent:eventType" in node
    ]
    assert len(records) == 2
    for node in records:
        assert "consent:receipt" not in node
        assert ", which the event names, " in node["consent:receiptProblem"]


async def test_a_retry_gets_no_receipt_signed_over_a_rewritten_event(
    client: httpx.AsyncClient, db: asyncpg.Connection, db_url: str, captured_logs: io.StringIO
) -> None:
    await published(db_url, example("itsailor"))
    body = event("accept-all", subject_id=uuid.uuid4(), event_id=str(uuid.uuid4()))
    first = await client.post(EVENTS, json=body)
    assert first.status_code == 201
    event_id = uuid.UUID(body["event_id"])
    again = await client.post(EVENTS, json=body)
    assert again.status_code == 200
    assert again.json()["receipt"] == first.json()["receipt"]

    # Its receipt removed: a retry gets none, not one signed now.
    await as_superuser(
        db, "UPDATE consent_events SET leaf = sha256(leaf) WHERE event_id = $1", event_id
    )
    detached = await client.post(EVENTS, json=body)
    assert detached.status_code == 200
    assert detached.json()["receipt"] is None
    assert "stored_receipt_not_held" in captured_logs.getvalue()

    # Rewritten into a refusal, with its receipt cleared as if it never had one: the row no
    # longer says what the body its request hash covers says, so nothing is signed for it.
    await as_superuser(
        db,
        "UPDATE consent_events SET event_type = 'reject-all', receipt = NULL,"
        ' choices = \'{"analytics": false, "necessary": true}\' WHERE event_id = $1',
        event_id,
    )
    forged = await client.post(EVENTS, json=body)
    assert forged.status_code == 200
    assert forged.json()["receipt"] is None
    assert "stored_event_differs_from_its_request" in captured_logs.getvalue()

    # An event that really has no receipt (stored before receipts were kept) still gets one.
    await as_superuser(
        db,
        "UPDATE consent_events SET event_type = 'accept-all', choices = $2, leaf = $3"
        " WHERE event_id = $1",
        event_id,
        json.dumps(first.json()["choices"]),
        bytes.fromhex(first.json()["receipt_proof"]["leaf"]),
    )
    restored = await client.post(EVENTS, json=body)
    assert restored.status_code == 200
    assert restored.json()["receipt"] is not None
    assert restored.json()["receipt_proof"]["tree_size"] == 1


def verify_as_auditor(db_url: str, data_dir: Path, *args: str) -> tuple[int, str]:
    """`ledger verify` with the database and nothing of the service's secrets."""
    env = {
        "CONSENT_DATABASE_URL": db_url,
        "CONSENT_DATA_DIR": str(data_dir),
        "CONSENT_IP_HASH_SALT": None,
        "CONSENT_RECEIPT_KEY": None,
    }
    result = CliRunner().invoke(cli, ["ledger", "verify", *args], env=env)
    return result.exit_code, result.stdout + result.stderr


async def test_an_auditor_verifies_receipts_with_the_published_keys_alone(
    app: ConsentAPI,
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    db_url: str,
    tmp_path: Path,
) -> None:
    await published(db_url, example("itsailor"))
    for kind in ("accept-all", "reject-all"):
        assert (await client.post(EVENTS, json=event(kind))).status_code == 201
    await seal_now(app)
    jwks = await client.get("/.well-known/jwks.json")
    saved = tmp_path / "jwks.json"
    saved.write_bytes(jwks.content)
    data_dir = tmp_path / "auditor"

    code, out = await asyncio.to_thread(verify_as_auditor, db_url, data_dir, "--jwks", str(saved))
    assert code == 0, out
    assert "2 receipts" in out

    # Without keys it says so, and makes none (a key made now would make every receipt look
    # forged).
    code, out = await asyncio.to_thread(verify_as_auditor, db_url, data_dir)
    assert code == 1
    assert "no receipt key to check the stored receipts with: give --jwks FILE" in out
    assert not (data_dir / "receipt.key").exists()

    # Another key's set: the receipts name a key it does not hold.
    other = {"keys": [public_jwk(Ed25519PrivateKey.generate().public_key())]}
    saved.write_text(json.dumps(other))
    code, out = await asyncio.to_thread(verify_as_auditor, db_url, data_dir, "--jwks", str(saved))
    assert code == 1
    assert "which is not among the keys it was checked with: a retired key left out" in out

    # A kid that is not its key's thumbprint would let one key pass for another.
    published_keys = jwks.json()
    published_keys["keys"][0]["kid"] = other["keys"][0]["kid"]
    saved.write_text(json.dumps(published_keys))
    code, out = await asyncio.to_thread(verify_as_auditor, db_url, data_dir, "--jwks", str(saved))
    assert code == 1
    assert "its kid is not its RFC 7638 thumbprint" in out

    # Every receipt row deleted: without a key, the events that name them are still receipts to
    # check, not a ledger with none.
    await as_superuser(db, "DELETE FROM ledger_receipts", tables=("ledger_receipts",))
    code, out = await asyncio.to_thread(verify_as_auditor, db_url, data_dir)
    assert code == 1
    assert "no receipt key to check the stored receipts with" in out

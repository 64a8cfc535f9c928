"""A receipt is given again only as it was signed (docs/evidence.md, "Receipts"): when a superuser
has removed an event's stored receipt, or rewritten the event so its receipt no longer holds its
leaf, an export says so instead of showing `null` (which reads as "stored before receipts"), and
a retry gets no receipt signed now over what the row holds today."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import asyncpg
import httpx

from service.core.pipeline import ConsentAPI
from tests.factories import api_key, bearer, event, example, published
from tests.ledger.tampering import as_superuser
from tests.ledger.test_ledger import seal_now

EVENTS = "/v1/properties/itsailor/consent-events"


async def exported(client: httpx.AsyncClient, db_url: str, subject: uuid.UUID) -> dict[str, Any]:
    reader = bearer(await api_key(db_url, "dsr:read"))
    response = await client.post(
        "/v1/dsr/exports", json={"subject_id": str(subject)}, headers=reader
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

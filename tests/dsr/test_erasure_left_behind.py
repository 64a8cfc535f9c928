"""An erasure never leaves a consent id's earlier decision to stand as its state: erasing a
refusal must not bring back the consent it replaced (docs/guarantees.md, "Erasure is
complete")."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from service.core.pipeline import ConsentAPI
from service.dsr import erasure
from service.state import of as services
from tests.factories import Clock, api_key, bearer, event, example, published

EVENTS = "/v1/properties/itsailor/consent-events"


@pytest.fixture
async def eraser(db_url: str) -> dict[str, str]:
    await published(db_url, example("itsailor"))
    return bearer(await api_key(db_url, "dsr:erase", "dsr:read"))  # dsr:read: the preview


async def send(
    client: httpx.AsyncClient, subject: uuid.UUID, event_type: str, **fields: Any
) -> None:
    response = await client.post(EVENTS, json=event(event_type, subject_id=subject, **fields))
    assert response.status_code == 201, response.text


async def state(client: httpx.AsyncClient, subject: uuid.UUID) -> str:
    response = await client.get(f"/v1/properties/itsailor/consents/{subject}")
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


async def test_erasing_a_refusal_by_account_does_not_bring_back_the_consent_before_it(
    client: httpx.AsyncClient, eraser: dict[str, str], db: asyncpg.Connection
) -> None:
    """A visitor accepts before signing in, then refuses signed in: the refusal carries the
    account id, the acceptance does not. Erased by account id, the refusal went and the
    acceptance was the consent id's state again ("given")."""
    device, other, later_refusal = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await send(client, device, "accept-all")
    await send(client, device, "reject-all", user_id="dave@example.com")
    await send(client, other, "accept-all", user_id="dave@example.com")  # all of it matches
    # The account's acceptance came first and a refusal without it last: that refusal stands.
    await send(client, later_refusal, "accept-all", user_id="dave@example.com")
    await send(client, later_refusal, "reject-all")
    assert await state(client, device) == "refused"

    # Counted first, as the console does before it asks: what the erasure will answer.
    preview = await client.post(
        "/v1/dsr/erasures/preview", json={"user_id": "dave@example.com"}, headers=eraser
    )
    assert preview.status_code == 200, preview.text
    assert preview.json() == {
        "matched": 3,
        "earlier_decisions": 1,
        "consent_ids_with_earlier_decisions": 1,
        "total": 4,
    }
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 5  # nothing erased
    looked = await db.fetchrow("SELECT action, matched FROM dsr_audit ORDER BY seq DESC LIMIT 1")
    assert (looked["action"], looked["matched"]) == ("history", 3)  # audited as a look-up

    answer = await client.post(
        "/v1/dsr/erasures", json={"user_id": "dave@example.com", "reference": "T-7"},
        headers=eraser,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert (result["matched"], result["deleted"]) == (5 - 1, 5 - 1)
    [earlier] = result["earlier_decisions"]
    assert await state(client, device) == "none"  # asked again, not "given"
    assert await state(client, other) == "none"
    assert await state(client, later_refusal) == "refused"
    # The earlier decisions' erasure is audited like the one asked for, by consent id.
    rows = {
        str(row["id"]): row
        for row in await db.fetch(
            "SELECT id, identifier_type, reference, actor, deleted FROM dsr_audit"
            " WHERE action = 'erasure'"
        )
    }
    assert set(rows) == {result["erasure_id"], earlier}
    assert rows[earlier]["identifier_type"] == "subject_id"
    assert rows[earlier]["deleted"] == 1
    assert rows[earlier]["reference"] == rows[result["erasure_id"]]["reference"] == "T-7"
    assert rows[earlier]["actor"] == rows[result["erasure_id"]]["actor"]
    assert (
        await db.fetchval("SELECT count(*) FROM consent_events WHERE subject_id = $1", device) == 0
    )


async def test_an_erasure_since_a_time_takes_the_decisions_it_replaced_with_it(
    client: httpx.AsyncClient, eraser: dict[str, str], db: asyncpg.Connection, app: ConsentAPI
) -> None:
    """Anonymised from a time on, a withdrawal went and the acceptance before it stood. An
    erasure until a time, which keeps the latest decision, takes nothing more."""
    clock = Clock()
    services(app).clock = clock
    subject, kept = uuid.uuid4(), uuid.uuid4()
    for who in (subject, kept):
        await send(client, who, "accept-all")
    clock.advance(days=3)
    since = clock.now.isoformat()
    for who in (subject, kept):
        await send(client, who, "withdraw")
    answer = await client.post(
        "/v1/dsr/erasures",
        json={"subject_id": str(subject), "since": since, "mode": "anonymise"},
        headers=eraser,
    )
    assert answer.status_code == 200, answer.text
    assert (answer.json()["anonymised"], len(answer.json()["earlier_decisions"])) == (2, 1)
    assert await state(client, subject) == "none"
    older = await client.post(
        "/v1/dsr/erasures",
        json={"subject_id": str(kept), "until": since, "mode": "anonymise"},
        headers=eraser,
    )
    assert (older.json()["anonymised"], older.json()["earlier_decisions"]) == (1, [])
    assert await state(client, kept) == "withdrawn"
    anonymised = await db.fetchval("SELECT count(*) FROM consent_events WHERE subject_id IS NULL")
    assert anonymised == 3


async def test_a_re_prompt_left_behind_takes_nothing_more(
    client: httpx.AsyncClient, eraser: dict[str, str], db: asyncpg.Connection
) -> None:
    """A re-prompt decides nothing, so it brings nothing back: a consent id whose only other
    event is one keeps it, and no erasure of its history is added."""
    subject = uuid.uuid4()
    await send(client, subject, "re-prompt")
    await send(client, subject, "reject-all", user_id="rita@example.com")
    answer = await client.post(
        "/v1/dsr/erasures", json={"user_id": "rita@example.com"}, headers=eraser
    )
    assert (answer.json()["deleted"], answer.json()["earlier_decisions"]) == (1, [])
    assert await state(client, subject) == "none"
    kept = await db.fetchval("SELECT event_type FROM consent_events WHERE subject_id = $1", subject)
    assert kept == "re-prompt"


async def test_a_deadlock_or_serialization_failure_is_a_503_that_changed_nothing(
    client: httpx.AsyncClient,
    eraser: dict[str, str],
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL rolled the transaction back to keep it apart from another (class 40): nothing
    the client did, nothing changed, a retry may succeed; a 503 with Retry-After, never a 500."""
    subject = uuid.uuid4()
    await send(client, subject, "accept-all")
    looked = erasure.decisions_left_behind

    async def deadlocked(*args: Any, **kwargs: Any) -> dict[tuple[str, uuid.UUID], int]:
        await looked(*args, **kwargs)
        raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")

    monkeypatch.setattr(erasure, "decisions_left_behind", deadlocked)
    answer = await client.post(
        "/v1/dsr/erasures",
        json={"subject_id": str(subject), "since": "2020-01-01T00:00:00Z"},
        headers=eraser,
    )
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert "Retry-After" in answer.headers
    assert "another change to the same records" in answer.json()["detail"]
    assert await db.fetchval("SELECT count(*) FROM dsr_audit WHERE action = 'erasure'") == 0
    assert await db.fetchval("SELECT count(*) FROM consent_events WHERE subject_id = $1", subject)

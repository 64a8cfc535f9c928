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
    return bearer(await api_key(db_url, "dsr:erase"))


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


async def test_a_decision_stored_while_an_erasure_runs_is_left_with_what_came_before_it(
    client: httpx.AsyncClient,
    eraser: dict[str, str],
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The erasure looks at the decisions it would leave behind, then erases. A refusal stored
    between the two, under the account being erased, was erased (each statement saw what was
    committed before it) while the acceptance before it, not matched, stayed: the consent id's
    state was "given" again. In one snapshot the refusal is not seen at all and stands."""
    device = uuid.uuid4()
    await send(client, device, "accept-all")
    await send(client, uuid.uuid4(), "accept-all", user_id="erin@example.com")
    looked = erasure.decisions_left_behind

    async def refusal_arrives(*args: Any, **kwargs: Any) -> dict[tuple[str, uuid.UUID], int]:
        left = await looked(*args, **kwargs)
        await send(client, device, "reject-all", user_id="erin@example.com")  # committed
        return left

    monkeypatch.setattr(erasure, "decisions_left_behind", refusal_arrives)
    answer = await client.post(
        "/v1/dsr/erasures", json={"user_id": "erin@example.com"}, headers=eraser
    )
    assert answer.status_code == 200, answer.text
    assert (answer.json()["matched"], answer.json()["earlier_decisions"]) == (1, [])
    assert await state(client, device) == "refused"
    types = await db.fetch(
        "SELECT event_type FROM consent_events WHERE subject_id = $1 ORDER BY seq", device
    )
    assert [row["event_type"] for row in types] == ["accept-all", "reject-all"]


async def test_two_erasures_of_the_same_events_at_once_both_answer_and_erase_once(
    client: httpx.AsyncClient,
    eraser: dict[str, str],
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another erasure of the same events commits while one runs (after its snapshot: the
    property's look-up is its first statement): the first's snapshot is then
    out of date, PostgreSQL refuses its change (40001), and it runs again from the start,
    matching nothing. Both answer 200; one audit row for each, none for the attempt undone."""
    subject = uuid.uuid4()
    await send(client, subject, "accept-all")
    await send(client, subject, "reject-all")
    looked = erasure.decisions_left_behind
    calls = 0

    async def other_erasure_first(*args: Any, **kwargs: Any) -> dict[tuple[str, uuid.UUID], int]:
        nonlocal calls
        calls += 1
        left = await looked(*args, **kwargs)
        if calls == 1:
            other = await client.post(
                "/v1/dsr/erasures",
                json={"subject_id": str(subject), "property": "itsailor"},
                headers=eraser,
            )
            assert (other.status_code, other.json()["matched"]) == (200, 2), other.text
        return left

    monkeypatch.setattr(erasure, "decisions_left_behind", other_erasure_first)
    answer = await client.post(
        "/v1/dsr/erasures",
        json={"subject_id": str(subject), "property": "itsailor"},
        headers=eraser,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["matched"] == 0
    assert calls == 3  # the outer erasure, the other one, the outer again
    audited = await db.fetch(
        "SELECT deleted FROM dsr_audit WHERE action = 'erasure' ORDER BY created_at"
    )
    assert [row["deleted"] for row in audited] == [2, 0]


async def test_an_erasure_that_keeps_conflicting_is_a_503_that_changed_nothing(
    client: httpx.AsyncClient,
    eraser: dict[str, str],
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Out of attempts, the conflict is the client's 503 with Retry-After, never a 500."""
    subject = uuid.uuid4()
    await send(client, subject, "accept-all")
    looked = erasure.decisions_left_behind
    nested = False

    async def conflicting(*args: Any, **kwargs: Any) -> dict[tuple[str, uuid.UUID], int]:
        nonlocal nested
        left = await looked(*args, **kwargs)
        if not nested:
            nested = True
            other = await client.post(
                "/v1/dsr/erasures",
                json={"subject_id": str(subject), "property": "itsailor", "mode": "anonymise"},
                headers=eraser,
            )
            assert other.status_code == 200, other.text
        return left

    monkeypatch.setattr(erasure, "decisions_left_behind", conflicting)
    monkeypatch.setattr(erasure, "ERASE_ATTEMPTS", 1)
    answer = await client.post(
        "/v1/dsr/erasures",
        json={"subject_id": str(subject), "property": "itsailor"},
        headers=eraser,
    )
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert "Retry-After" in answer.headers
    assert "another change to the same records" in answer.json()["detail"]
    assert await db.fetchval("SELECT count(*) FROM dsr_audit WHERE action = 'erasure'") == 1

"""Decisions that reach the service out of order (migration 0026): a browser's event ids are
UUIDv7 (client 1.0.3), and a decision stored after a later one of the same browser, within a
minute of it, is not the subject's state. Every event stays stored as it came."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.factories import api_key, bearer, event, example, published

EVENTS = "/v1/properties/itsailor/consent-events"
T0 = 1_796_000_000_000  # a browser's clock, in Unix milliseconds


def uuid7(ms: int, counter: int = 0) -> uuid.UUID:
    """A UUIDv7 as client 1.0.3 makes it (RFC 9562, method 1: a 12-bit counter after the time)."""
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    return uuid.UUID(int=(ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand)


@pytest.fixture
async def schemas(db_url: str) -> None:
    await published(db_url, example("itsailor"))


async def send(client: httpx.AsyncClient, subject: uuid.UUID, kind: str, **fields: Any) -> None:
    response = await client.post(EVENTS, json=event(kind, subject_id=subject, **fields))
    assert response.status_code == 201, response.text


async def state(client: httpx.AsyncClient, subject: uuid.UUID) -> dict[str, Any]:
    response = await client.get(f"/v1/properties/itsailor/consents/{subject}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_test_ids_are_uuidv7_in_time_order() -> None:
    ids = [uuid7(T0), uuid7(T0, 1), uuid7(T0 + 1)]
    assert [made.version for made in ids] == [7, 7, 7]
    assert sorted(ids, key=lambda made: made.bytes) == ids
    assert str(ids[0])[14] == "7"  # what the database reads as the version


@pytest.mark.usefixtures("schemas")
async def test_an_acceptance_that_arrives_after_the_withdrawal_made_after_it_is_not_the_state(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """The reviewer's sequence: accept-all, then withdraw a moment later, the page closed; the
    withdrawal's beacon is stored first. The acceptance, stored last, was the state."""
    subject = uuid.uuid4()
    await send(client, subject, "withdraw", event_id=str(uuid7(T0 + 900)))
    await send(client, subject, "accept-all", event_id=str(uuid7(T0)))
    now = await state(client, subject)
    assert (now["status"], now["event_type"]) == ("withdrawn", "withdraw")
    stored = await db.fetch(
        "SELECT event_type FROM consent_events WHERE subject_id = $1 ORDER BY seq", subject
    )
    assert [row["event_type"] for row in stored] == ["withdraw", "accept-all"]  # both kept

    # A decision made after both is the state, whenever it arrives in order.
    await send(client, subject, "reject-all", event_id=str(uuid7(T0 + 5000)))
    assert (await state(client, subject))["event_type"] == "reject-all"


@pytest.mark.usefixtures("schemas")
async def test_three_decisions_in_reverse_order_leave_the_last_made(
    client: httpx.AsyncClient,
) -> None:
    subject = uuid.uuid4()
    made = [uuid7(T0), uuid7(T0, 1), uuid7(T0 + 2)]
    kinds = ["accept-all", "reject-all", "save-selection"]
    for kind, event_id in reversed(list(zip(kinds, made, strict=True))):
        fields: dict[str, Any] = (
            {"categories": {"analytics": True}} if kind == "save-selection" else {}
        )
        await send(client, subject, kind, event_id=str(event_id), **fields)
    assert (await state(client, subject))["event_type"] == "save-selection"


@pytest.mark.usefixtures("schemas")
async def test_random_ids_and_a_dsr_entry_keep_the_order_they_were_stored_in(
    client: httpx.AsyncClient, db_url: str
) -> None:
    """Without UUIDv7 ids (clients before 1.0.3, or none sent) nothing says which came first:
    the last stored is the state, as before. A withdrawal the DSR team entered is never
    overtaken, and a browser decision that arrives late behind it is overtaken by the browser's
    own later one."""
    random_ids = uuid.uuid4()
    await send(client, random_ids, "withdraw", event_id=str(uuid.uuid4()))
    await send(client, random_ids, "accept-all", event_id=str(uuid.uuid4()))
    assert (await state(client, random_ids))["event_type"] == "accept-all"

    subject = uuid.uuid4()
    await send(client, subject, "accept-all", event_id=str(uuid7(T0 + 900)))
    withdrawer = bearer(await api_key(db_url, "dsr:withdraw"))
    entered = await client.post(
        "/v1/dsr/withdrawals",
        json={"subject_id": str(subject), "reference": "LETTER-1"},
        headers=withdrawer,
    )
    assert entered.status_code == 201, entered.text
    await send(client, subject, "reject-all", event_id=str(uuid7(T0)))  # made before the accept
    now = await state(client, subject)
    assert (now["event_type"], now["source"]) == ("withdraw", "dsr")


async def _insert(
    db: asyncpg.Connection, subject: uuid.UUID, event_id: uuid.UUID, kind: str, at: datetime
) -> None:
    """A row stored at `at`, as the tables' owner (the service stores at the database's time)."""
    await db.execute(
        "INSERT INTO consent_events (event_id, property, subject_id, event_type, schema_version,"
        " choices, effective, gpc, dnt, signals_applied, request_hash, recorded_at, identity,"
        " leaf) VALUES ($1, 'itsailor', $2, $3, 1, '{}', '{}', false, false, '[]', sha256('x'),"
        " $4, sha256('i'::bytea), sha256($1::uuid::text::bytea))",
        event_id, subject, kind, at,
    )  # fmt: skip


async def _latest(db: asyncpg.Connection, subject: uuid.UUID) -> str:
    row = await db.fetchrow(
        "SELECT event_type FROM consent_latest_decisions($1::uuid[], $2::text[])",
        [subject],
        ["itsailor"],
    )
    assert row is not None
    return str(row["event_type"])


@pytest.mark.usefixtures("schemas")
async def test_only_a_decision_stored_within_a_minute_before_can_overtake_one(
    db: asyncpg.Connection,
) -> None:
    """A browser's clock set back (or ids made up) can make a decision look older than one stored
    long ago: that one does not overtake it. Out-of-order arrivals are seconds apart."""
    subject = uuid.uuid4()
    stored_at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    await _insert(db, subject, uuid7(T0 + 60_000), "accept-all", stored_at)
    await _insert(db, subject, uuid7(T0), "reject-all", stored_at + timedelta(seconds=59))
    assert await _latest(db, subject) == "accept-all"  # overtaken: made before, stored after
    await _insert(db, subject, uuid7(T0 + 1), "withdraw", stored_at + timedelta(seconds=61))
    assert await _latest(db, subject) == "withdraw"  # the acceptance is too long before it


@pytest.mark.usefixtures("schemas")
async def test_an_erasure_reads_the_latest_decision_as_the_state_does(
    client: httpx.AsyncClient, db_url: str
) -> None:
    """The refusal (signed in) was made last but stored first; the acceptance (signed out) was
    stored last. The state is the refusal: erased by account id, the acceptance goes with it,
    not left to be the state."""
    device = uuid.uuid4()
    await send(client, device, "reject-all", event_id=str(uuid7(T0 + 900)), user_id="frank")
    await send(client, device, "accept-all", event_id=str(uuid7(T0)))
    assert (await state(client, device))["status"] == "refused"
    eraser = bearer(await api_key(db_url, "dsr:erase"))
    answer = await client.post("/v1/dsr/erasures", json={"user_id": "frank"}, headers=eraser)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["matched"], len(answer.json()["earlier_decisions"])) == (2, 1)
    assert (await state(client, device))["status"] == "none"

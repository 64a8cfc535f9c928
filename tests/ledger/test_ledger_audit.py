"""What `ledger verify` checks beyond the seals (docs/evidence.md, "Verifying"): every tombstone
belongs to an audited erasure that accounts for it, and every stored receipt is signed by the
service over the leaves it holds, one of them each of its events' leaf."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import asyncpg
import httpx
import pytest

from service.core.pipeline import ConsentAPI
from service.ledger.event import IDENTIFYING_COLUMNS
from service.state import of as services
from tests.factories import Clock, api_key, bearer, example, published
from tests.ledger.tampering import as_superuser
from tests.ledger.test_ledger import ledger, seal_now, send
from tests.retention.test_purge import purge, with_retention


async def erase(client: httpx.AsyncClient, key: dict[str, str], subject: uuid.UUID) -> str:
    response = await client.post(
        "/v1/dsr/erasures", json={"subject_id": str(subject), "mode": "delete"}, headers=key
    )
    assert response.status_code == 200, response.text
    return str(response.json()["erasure_id"])


async def delete_as_owner(db: asyncpg.Connection, erasure: uuid.UUID, event_id: str) -> None:
    """The owner's way around the erasure function: the erasure switch set by hand."""
    async with db.transaction():
        await db.execute("SET LOCAL consent.erasure = 'on'")
        await db.execute(f"SET LOCAL consent.erasure_id = '{erasure}'")
        await db.execute("DELETE FROM consent_events WHERE event_id = $1", uuid.UUID(event_id))


async def test_tombstones_name_their_erasure_and_a_delete_outside_one_is_named(
    app: ConsentAPI,
    client: httpx.AsyncClient,
    erase_key: dict[str, str],
    db: asyncpg.Connection,
    db_url: str,
) -> None:
    erased, kept = uuid.uuid4(), uuid.uuid4()
    for subject in (erased, kept, erased):
        await send(client, subject)
    victim = await send(client, kept)
    erasure = await erase(client, erase_key, erased)
    await seal_now(app)
    named = await db.fetch("SELECT erasure FROM ledger_tombstones")
    assert [str(row["erasure"]) for row in named] == [erasure, erasure]
    assert (await ledger(db_url, "verify"))[0] == 0

    # Without naming an erasure, the database refuses the delete outright.
    async with db.transaction():
        await db.execute("SET LOCAL consent.erasure = 'on'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="audited erasure"):
            async with db.transaction():  # a savepoint
                await db.execute(
                    "DELETE FROM consent_events WHERE event_id = $1", uuid.UUID(victim)
                )

    # Naming a real erasure that deleted fewer events: its audit row does not account for it.
    await delete_as_owner(db, uuid.UUID(erasure), victim)
    code, out = await ledger(db_url, "verify")
    assert code == 1
    assert f"3 tombstone(s) from seq 1 name erasure {erasure}" in out
    assert "outside an audited erasure" in out


async def test_a_tombstone_naming_no_audited_erasure_is_named(
    client: httpx.AsyncClient, erase_key: dict[str, str], db: asyncpg.Connection, db_url: str
) -> None:
    victim = await send(client, uuid.uuid4())
    invented = uuid.uuid4()
    await delete_as_owner(db, invented, victim)
    code, out = await ledger(db_url, "verify")
    assert code == 1
    assert f"name erasure {invented}, which has no audit row" in out


async def test_a_stored_receipt_that_does_not_sign_its_leaves_is_named(
    app: ConsentAPI,
    client: httpx.AsyncClient,
    erase_key: dict[str, str],
    db: asyncpg.Connection,
    db_url: str,
) -> None:
    first = await send(client, uuid.uuid4())
    second = await send(client, uuid.uuid4())
    await seal_now(app)
    code, out = await ledger(db_url, "verify")
    assert code == 0, out
    assert "2 receipts" in out

    receipt = await db.fetchval(
        "SELECT receipt FROM consent_events WHERE event_id = $1", uuid.UUID(first)
    )
    # An event pointed at another batch's receipt: that receipt does not hold its leaf.
    await as_superuser(
        db,
        "UPDATE consent_events SET receipt = (SELECT receipt FROM consent_events"
        " WHERE event_id = $2) WHERE event_id = $1",
        uuid.UUID(first),
        uuid.UUID(second),
    )
    code, out = await ledger(db_url, "verify")
    assert code == 1
    assert f"event {first} (seq 1): receipt" in out
    assert "does not hold its leaf" in out
    await as_superuser(
        db, "UPDATE consent_events SET receipt = $2 WHERE event_id = $1", uuid.UUID(first), receipt
    )
    assert (await ledger(db_url, "verify"))[0] == 0

    # A receipt's leaves rewritten: its signature no longer covers them.
    await as_superuser(
        db,
        "UPDATE ledger_receipts SET leaves = sha256(leaves) WHERE id = $1",
        receipt,
        tables=("ledger_receipts",),
    )
    code, out = await ledger(db_url, "verify")
    assert code == 1
    assert f"receipt {receipt}: it does not sign the root of its 1 stored leaves" in out


async def test_an_event_marked_anonymised_or_detached_from_its_receipt_is_named(
    app: ConsentAPI, client: httpx.AsyncClient, db: asyncpg.Connection, db_url: str, owner_url: str
) -> None:
    """A superuser's two quiet edits: `anonymised_at` set on an event that keeps what identifies
    it, and an event's receipt cleared (which an export shows as an event stored before
    receipts). Neither changes a leaf; both are named, while erasures of both kinds and a
    retention purge, whose leaves stay in their receipts, still verify."""
    await published(db_url, with_retention(example("itsailor"), 1, 1))
    eraser = bearer(await api_key(db_url, "dsr:erase"))
    clock = Clock()
    services(app).clock = clock
    start = clock.now
    await send(client, uuid.uuid4())  # past retention at the purge below
    clock.now = start + timedelta(days=10)
    deleted, anonymised, kept = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    target = await send(client, kept)
    for subject in (deleted, anonymised, kept):
        await send(client, subject)
    for subject, mode in ((deleted, "delete"), (anonymised, "anonymise")):
        response = await client.post(
            "/v1/dsr/erasures", json={"subject_id": str(subject), "mode": mode}, headers=eraser
        )
        assert response.status_code == 200, response.text
    as_of = (start + timedelta(days=5)).isoformat()
    code, out = await asyncio.to_thread(purge, owner_url, "--allow-future", "--as-of", as_of)
    assert code == 0, out
    assert await db.fetchval("SELECT count(*) FROM ledger_tombstones") == 2
    await seal_now(app)
    code, out = await ledger(db_url, "verify")
    assert code == 0, out
    assert "1 anonymised; 2 erased" in out

    # Marked anonymised, though its subject, hashes and salt are all still there.
    await as_superuser(
        db, "UPDATE consent_events SET anonymised_at = now() WHERE event_id = $1", uuid.UUID(target)
    )
    code, out = await ledger(db_url, "verify")
    assert code == 1
    assert f"event {target} (seq" in out
    assert "is marked anonymised but keeps subject_id" in out
    await as_superuser(
        db, "UPDATE consent_events SET anonymised_at = NULL WHERE event_id = $1", uuid.UUID(target)
    )
    assert (await ledger(db_url, "verify"))[0] == 0

    # Detached from the signed batch it was stored in.
    receipt = await db.fetchval(
        "SELECT receipt FROM consent_events WHERE event_id = $1", uuid.UUID(target)
    )
    await as_superuser(
        db, "UPDATE consent_events SET receipt = NULL WHERE event_id = $1", uuid.UUID(target)
    )
    code, out = await ledger(db_url, "verify")
    assert code == 1
    assert f"event {target} (seq" in out
    assert f"names no receipt, but receipt {receipt} holds its leaf" in out


async def test_an_anonymisation_outside_an_audited_erasure_is_named(
    app: ConsentAPI, client: httpx.AsyncClient, db: asyncpg.Connection, db_url: str
) -> None:
    """A review's finding: the owner, with `consent.erasure` on, emptied an event's identifying
    columns by hand; `verify` passed it, the decision still counted and gone from the person's
    history and export. Each anonymised event now names the audited erasure that anonymised it
    (migration 0025)."""
    await published(db_url, example("itsailor"))
    eraser = bearer(await api_key(db_url, "dsr:erase"))
    anonymised = uuid.uuid4()
    await send(client, anonymised)
    around, forged = await send(client, uuid.uuid4()), await send(client, uuid.uuid4())
    answer = await client.post(
        "/v1/dsr/erasures", json={"subject_id": str(anonymised), "mode": "anonymise"},
        headers=eraser,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    [row] = await db.fetch("SELECT erasure FROM ledger_anonymisations")
    assert str(row["erasure"]) == answer.json()["erasure_id"]
    await seal_now(app)
    code, out = await ledger(db_url, "verify")
    assert code == 0, out

    cleared = ", ".join(f"{name} = NULL" for name in IDENTIFYING_COLUMNS)
    anonymise = f"UPDATE consent_events SET {cleared}, anonymised_at = now() WHERE event_id = $1"
    # The owner on the erasure path, naming no erasure: refused by the database, through the
    # partitioned table or on the month's partition itself.
    partition = await db.fetchval(
        "SELECT tableoid::regclass::text FROM consent_events WHERE event_id = $1", uuid.UUID(around)
    )
    for table in ("consent_events", partition):
        async with db.transaction():
            await db.execute("SET LOCAL consent.erasure = 'on'")
            with pytest.raises(
                asyncpg.exceptions.InsufficientPrivilegeError, match="audited erasure"
            ):
                await db.execute(anonymise.replace("consent_events", table, 1), uuid.UUID(around))
    # Around the trigger: an anonymised event that no erasure anonymised.
    await as_superuser(db, anonymise, uuid.UUID(around))
    code, out = await ledger(db_url, "verify")
    assert code == 1
    assert f"event {around} (seq" in out, out
    assert "is anonymised, but no erasure anonymised it" in out, out
    # Naming a real anonymising erasure whose one event is recorded (as before 0025) under no
    # erasure: its count has room, but the anonymisation is not of its transaction.
    erasure = uuid.UUID(answer.json()["erasure_id"])
    await as_superuser(
        db, "DELETE FROM ledger_anonymisations WHERE erasure = $1", erasure,
        tables=("ledger_anonymisations",),
    )  # fmt: skip
    await as_superuser(
        db, "INSERT INTO ledger_anonymisations (seq, erasure) SELECT seq, NULL FROM consent_events"
        " WHERE subject_id IS NULL AND event_id <> $1", uuid.UUID(around),
        tables=("ledger_anonymisations",),
    )  # fmt: skip
    claimed = await send(client, uuid.uuid4())
    async with db.transaction():
        await db.execute("SET LOCAL consent.erasure = 'on'")
        await db.execute(f"SET LOCAL consent.erasure_id = '{erasure}'")
        await db.execute(anonymise, uuid.UUID(claimed))
    code, out = await ledger(db_url, "verify")
    assert code == 1
    assert (
        f"name erasure {erasure}, which has an audit row of erasure (anonymise, 1 anonymised,"
        " written in another transaction): events were anonymised outside an audited erasure"
    ) in out, out
    await as_superuser(
        db, "DELETE FROM ledger_anonymisations WHERE erasure = $1", erasure,
        tables=("ledger_anonymisations",),
    )  # fmt: skip
    # Naming an erasure that has no audit row.
    made_up = uuid.uuid4()
    async with db.transaction():
        await db.execute("SET LOCAL consent.erasure = 'on'")
        await db.execute(f"SET LOCAL consent.erasure_id = '{made_up}'")
        await db.execute(anonymise, uuid.UUID(forged))
    code, out = await ledger(db_url, "verify")
    assert code == 1
    seq = await db.fetchval("SELECT seq FROM consent_events WHERE event_id = $1", uuid.UUID(forged))
    assert (
        f"1 anonymised event(s) from seq {seq} name erasure {made_up}, which has no audit row:"
        " events were anonymised outside an audited erasure"
    ) in out, out

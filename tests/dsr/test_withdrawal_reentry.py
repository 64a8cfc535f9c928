"""A withdrawal whose `withdraw` events are gone while its audit row stands (a restore of an older
backup, then `backup reapply`: docs/backup.md) is recorded again when re-entered under its own
reference (docs/policies.md, "Retries"), for the subjects and properties that lost it and still
have it as their latest word. tests/ops/test_backup.py makes the loss with a real restore; here
the restored audit row is put back the way `reapply` does, without the dump."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from service.core.config import Settings
from service.core.db import create_engine, create_sessionmaker
from service.core.hashing import hasher_from_settings
from service.dsr.bodies import AuditEntry, DsrAction, IdentifierType, WithdrawalRequest
from service.dsr.journal import JournalLine, reapply
from service.dsr.service import audit_hash
from tests.factories import api_key, bearer, event, example, published
from tests.ledger.tampering import as_superuser

WITHDRAWALS = "/v1/dsr/withdrawals"
COUNTS = """
SELECT (SELECT count(*) FROM consent_events WHERE source = 'dsr') AS events,
       (SELECT count(*) FROM dsr_audit WHERE action = 'withdrawal-reentered') AS reentries,
       (SELECT count(*) FROM dsr_audit WHERE action = 'withdrawal-replayed') AS replays
"""


@pytest.fixture
async def headers(db_url: str) -> dict[str, str]:
    await published(db_url, example("itsailor"))
    await published(db_url, example("ailabrix"))
    return bearer(await api_key(db_url, "dsr:withdraw", "dsr:erase"))


async def decide(client: httpx.AsyncClient, prop: str, subject: uuid.UUID, **fields: Any) -> None:
    response = await client.post(
        f"/v1/properties/{prop}/consent-events",
        json=event("accept-all", subject_id=subject, **fields),
    )
    assert response.status_code == 201, response.text


async def status(client: httpx.AsyncClient, prop: str, subject: uuid.UUID) -> str:
    response = await client.get(f"/v1/properties/{prop}/consents/{subject}")
    return str(response.json()["status"])


async def counts(db: asyncpg.Connection) -> dict[str, int]:
    row = await db.fetchrow(COUNTS)
    assert row is not None
    return dict(row)


def withdrawal_row(
    settings: Settings, body: dict[str, str], *, matched: int, action: DsrAction | None = None
) -> AuditEntry:
    """The audit row of a withdrawal recorded in a database since lost, as its journal keeps it."""
    hasher = hasher_from_settings(settings)
    return AuditEntry(
        id=uuid.uuid4(),
        action=action or DsrAction.WITHDRAWAL,
        actor="key-lost",
        identifier_type=IdentifierType.USER_ID,
        identifier_hash=audit_hash(WithdrawalRequest.model_validate(body), hasher),
        hash_key_id=hasher.current.key_id,
        property=None,
        since=None,
        until=None,
        mode=None,
        reference=body["reference"],
        matched=matched,
        deleted=0,
        anonymised=0,
        request_id=None,
        created_at=datetime.now(UTC),
    )


async def put_back(owner_url: str, settings: Settings, *rows: AuditEntry) -> list[str]:
    """`backup reapply` of a journal holding `rows`: what it lists to re-enter."""
    engine = create_engine(owner_url, pool_size=1)
    try:
        async with create_sessionmaker(engine).begin() as session:
            lines = [JournalLine(journal=1, audit=row) for row in rows]
            done = await reapply(session, hasher_from_settings(settings), lines, actor="cli")
            return done.withdrawals
    finally:
        await engine.dispose()


async def test_a_subject_decided_since_the_lost_withdrawal_keeps_that_decision(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    owner_url: str,
    settings: Settings,
    headers: dict[str, str],
) -> None:
    """The phone accepted again after the withdrawal (a decision the restore did not lose):
    re-entering the withdrawal must not overturn it. The laptop's latest word is still the
    withdrawal: it is recorded again."""
    laptop, phone = uuid.uuid4(), uuid.uuid4()
    await decide(client, "itsailor", laptop, user_id="customer-42")
    await decide(client, "itsailor", phone, user_id="customer-42")
    body = {"user_id": "customer-42", "reference": "DSR-118"}
    lost = withdrawal_row(settings, body, matched=2)
    assert await put_back(owner_url, settings, lost) == ["DSR-118"]
    await decide(client, "itsailor", phone, user_id="customer-42")

    again = await client.post(WITHDRAWALS, json=body, headers=headers)
    assert again.status_code == 201, again.text
    answer = again.json()
    assert (answer["withdrawal_id"], answer["withdrawn"]) == (str(lost.id), 1)
    assert [i["subject_id"] for i in answer["items"]] == [str(laptop)]
    assert (await status(client, "itsailor", laptop), await status(client, "itsailor", phone)) == (
        "withdrawn",
        "given",
    )
    reentry = await db.fetchrow("SELECT * FROM dsr_audit WHERE action = 'withdrawal-reentered'")
    assert reentry is not None
    assert (reentry["reference"], reentry["matched"], reentry["property"]) == ("DSR-118", 1, None)
    assert reentry["id"] != lost.id

    # Nothing more is missing: the next one is a retry, answered with the re-entered event.
    retry = await client.post(WITHDRAWALS, json=body, headers=headers)
    assert retry.status_code == 200, retry.text
    assert retry.json() == {"withdrawal_id": str(lost.id), "withdrawn": 2, "items": answer["items"]}
    assert await counts(db) == {"events": 1, "reentries": 1, "replays": 1}


async def test_only_the_pairs_that_lost_their_event_are_recorded_again(
    client: httpx.AsyncClient, db: asyncpg.Connection, headers: dict[str, str]
) -> None:
    """A restore to a backup older than the laptop's withdrawal kept its older decision and lost
    the withdrawal, so the state reads the decision again against the withdrawal in writing.
    Re-entered, the laptop's is recorded again; the phone's two still stand and are not recorded
    twice. (A ranged erasure cannot do this: it takes the decisions it would leave behind with
    it, tests/dsr/test_erasure_left_behind.py.)"""
    laptop, phone = uuid.uuid4(), uuid.uuid4()
    await decide(client, "itsailor", laptop, user_id="customer-42")
    await decide(client, "itsailor", phone, user_id="customer-42")
    await decide(client, "ailabrix", phone, user_id="customer-42")
    body = {"user_id": "customer-42", "reference": "DSR-9"}
    first = (await client.post(WITHDRAWALS, json=body, headers=headers)).json()
    assert first["withdrawn"] == 3
    # What the restore holds: the laptop's withdrawal was stored after the backup.
    await as_superuser(
        db,
        "DELETE FROM consent_events WHERE subject_id = $1 AND event_type = 'withdraw'",
        laptop,
    )
    assert await status(client, "itsailor", laptop) == "given"

    again = await client.post(WITHDRAWALS, json=body, headers=headers)
    assert again.status_code == 201, again.text
    answer = again.json()
    assert (answer["withdrawal_id"], answer["withdrawn"]) == (first["withdrawal_id"], 1)
    assert [(i["property"], i["subject_id"]) for i in answer["items"]] == [
        ("itsailor", str(laptop))
    ]
    assert await status(client, "itsailor", laptop) == "withdrawn"
    assert await counts(db) == {"events": 3, "reentries": 1, "replays": 0}

    retry = await client.post(WITHDRAWALS, json=body, headers=headers)
    assert retry.status_code == 200, retry.text
    assert sorted(i["event_id"] for i in retry.json()["items"]) == sorted(
        [i["event_id"] for i in first["items"] if i["subject_id"] == str(phone)]
        + [answer["items"][0]["event_id"]]
    )
    assert await counts(db) == {"events": 3, "reentries": 1, "replays": 1}


async def test_identical_re_entries_at_once_record_once(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    owner_url: str,
    settings: Settings,
    headers: dict[str, str],
) -> None:
    """The advisory lock on the reference holds for a re-entry too: one records, the others wait
    for its commit and answer it as a retry."""
    await decide(client, "itsailor", uuid.uuid4(), user_id="customer-42")
    await decide(client, "ailabrix", uuid.uuid4(), user_id="customer-42")
    body = {"user_id": "customer-42", "reference": "DSR-RACE"}
    lost = withdrawal_row(settings, body, matched=2)
    await put_back(owner_url, settings, lost)

    answers = await asyncio.gather(
        *(client.post(WITHDRAWALS, json=body, headers=headers) for _ in range(3))
    )

    assert sorted(a.status_code for a in answers) == [200, 200, 201], [a.text for a in answers]
    assert {a.json()["withdrawal_id"] for a in answers} == {str(lost.id)}
    assert len({i["event_id"] for a in answers for i in a.json()["items"]}) == 2
    assert await counts(db) == {"events": 2, "reentries": 1, "replays": 2}


async def test_reapply_lists_each_reference_to_re_enter_once(
    owner_url: str, settings: Settings, headers: dict[str, str]
) -> None:
    """A withdrawal and its re-entry both lost (a second restore) are one reference to re-enter;
    one that matched nothing has nothing to record again."""
    body = {"user_id": "customer-42", "reference": "DSR-2"}
    rows = (
        withdrawal_row(settings, body, matched=2),
        withdrawal_row(settings, body, matched=2, action=DsrAction.WITHDRAWAL_REENTERED),
        withdrawal_row(settings, {**body, "reference": "DSR-3"}, matched=0),
    )
    assert await put_back(owner_url, settings, *rows) == ["DSR-2"]


def test_the_cli_says_it_recorded_a_lost_withdrawal_again(
    db_url: str, owner_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dsr withdraw` under the reference of a withdrawal whose events are gone: recorded (exit
    0, the result on stdout), and said so on stderr, not as a retry."""
    from typer.testing import CliRunner

    from service.cli import app as cli
    from tests.conftest import TEST_KEY

    subject = uuid.uuid4()

    async def lose() -> uuid.UUID:
        await published(db_url, example("itsailor"))
        connection = await asyncpg.connect(owner_url)  # a decision made before the backup
        try:
            await connection.execute(
                "INSERT INTO consent_events (event_id, property, subject_id, event_type,"
                " schema_version, choices, effective, gpc, dnt, signals_applied, request_hash,"
                " recorded_at, identity, leaf) VALUES (gen_random_uuid(), 'itsailor', $1,"
                " 'accept-all', 1, '{}', '{}', false, false, '[]', sha256('x'), now(),"
                " sha256('i'::bytea), sha256('l'::bytea))",
                subject,
            )
        finally:
            await connection.close()
        row = withdrawal_row(settings, {"user_id": "x", "reference": "LETTER-5"}, matched=1)
        hasher = hasher_from_settings(settings)
        request = WithdrawalRequest.model_validate(
            {"subject_id": str(subject), "reference": "LETTER-5"}
        )
        row = row.model_copy(
            update={
                "identifier_type": IdentifierType.SUBJECT_ID,
                "identifier_hash": audit_hash(request, hasher),
            }
        )
        await put_back(owner_url, settings, row)
        return row.id

    withdrawal_id = asyncio.run(lose())
    monkeypatch.setenv("CONSENT_DATABASE_URL", db_url)
    monkeypatch.setenv("CONSENT_IP_HASH_SALT", TEST_KEY)
    command = ["dsr", "withdraw", "--subject-id", str(subject), "--reference", "LETTER-5"]
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"withdrawal {withdrawal_id}: 1 subject(s) and property(ies)")
    assert result.stderr == (
        f"recorded again: reference 'LETTER-5' is withdrawal {withdrawal_id}, whose withdraw "
        "event(s) are not in the database (a restore of an older backup loses them: "
        "docs/backup.md); the missing ones were recorded again\n"
    )
    again = CliRunner().invoke(cli, command)
    assert again.exit_code == 0, again.output
    assert again.stderr.startswith("already recorded: reference 'LETTER-5'")

"""The tamper-evident ledger (docs/evidence.md): every event's leaf is the documented hash of its
canonical record; seals chain; `ledger verify` passes on a ledger with erasures, and names the
event a superuser rewrote, the seal whose fields changed, or the head the ledger no longer
reaches."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from service.cli import app as cli
from service.core.pipeline import ConsentAPI
from service.ledger.event import IDENTITY_COLUMNS, RECORD_LEAF_COLUMNS
from service.ledger.sealer import seal_ledger
from service.state import of as services
from service.stats.rollup import seal
from tests.conftest import TEST_KEY, TEST_RECEIPT_KEY
from tests.factories import event
from tests.ledger.tampering import as_superuser

EVENTS = "/v1/properties/itsailor/consent-events"


async def send(
    client: httpx.AsyncClient, subject: uuid.UUID, event_type: str = "accept-all"
) -> str:
    response = await client.post(
        EVENTS, json=event(event_type, subject_id=subject, page_url="https://itsailor.io/a")
    )
    assert response.status_code == 201, response.text
    return str(response.json()["event_id"])


async def seal_now(app: ConsentAPI) -> None:
    engine = services(app).engine
    assert await seal(engine)
    assert await seal_ledger(engine) is not None


def run(db_url: str, *args: str) -> tuple[int, str]:
    env = {
        "CONSENT_DATABASE_URL": db_url,
        "CONSENT_IP_HASH_SALT": TEST_KEY,
        "CONSENT_RECEIPT_KEY": TEST_RECEIPT_KEY,
    }
    result = CliRunner().invoke(cli, ["ledger", *args], env=env)
    return result.exit_code, result.stdout + result.stderr


async def ledger(db_url: str, *args: str) -> tuple[int, str]:
    return await asyncio.to_thread(run, db_url, *args)


def canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def column_value(row: asyncpg.Record, name: str) -> Any:
    value = row[name]
    if name in ("choices", "effective", "signals_applied"):
        return json.loads(value)
    if name == "recorded_at":
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):  # a digest (ip_hash, user_hash, request_hash): as hex
        return value.hex()
    return str(value) if isinstance(value, uuid.UUID) else value


def documented_identity(row: asyncpg.Record) -> bytes:
    """docs/evidence.md, "The leaf": the identifying columns with the salt."""
    document = {name: column_value(row, name) for name in IDENTITY_COLUMNS}
    document["salt"] = bytes(row["salt"]).hex()
    return hashlib.sha256(canonical(document)).digest()


def documented_leaf(row: asyncpg.Record, content_hash: str) -> bytes:
    """docs/evidence.md, "The leaf", written out again with the standard library's JSON."""
    document = {name: column_value(row, name) for name in RECORD_LEAF_COLUMNS}
    document |= {"content_hash": content_hash, "identity": bytes(row["identity"]).hex(), "v": 2}
    return hashlib.sha256(b"\x00" + canonical(document)).digest()


async def test_every_leaf_is_the_documented_hash_of_its_record(
    client: httpx.AsyncClient, erase_key: dict[str, str], db: asyncpg.Connection
) -> None:
    for event_type in ("accept-all", "reject-all", "withdraw"):
        await send(client, uuid.uuid4(), event_type)
    rows = await db.fetch(
        "SELECT e.*, v.content_sha256 AS content_hash FROM consent_events e"
        " JOIN consent_schema_versions v"
        " ON v.property = e.property AND v.version = e.schema_version"
    )
    assert len(rows) == 3
    for row in rows:
        assert len(bytes(row["salt"])) == 16
        assert bytes(row["identity"]) == documented_identity(row)
        assert bytes(row["leaf"]) == documented_leaf(row, row["content_hash"])
    assert len({bytes(row["salt"]) for row in rows}) == 3


async def test_verify_passes_with_erasures_and_names_an_event_a_superuser_rewrote(
    app: ConsentAPI,
    client: httpx.AsyncClient,
    erase_key: dict[str, str],
    db: asyncpg.Connection,
    db_url: str,
) -> None:
    deleted, anonymised, kept = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for subject in (deleted, anonymised, kept, deleted, kept):
        await send(client, subject)
    await seal_now(app)
    target = await send(client, kept, "withdraw")
    for subject, mode in ((deleted, "delete"), (anonymised, "anonymise")):
        response = await client.post(
            "/v1/dsr/erasures", json={"subject_id": str(subject), "mode": mode}, headers=erase_key
        )
        assert response.status_code == 200, response.text
    await seal_now(app)
    await send(client, kept)  # stored, not sealed yet

    assert await db.fetchval("SELECT count(*) FROM ledger_tombstones") == 2
    assert await db.fetchval("SELECT count(*) FROM consent_events WHERE salt IS NULL") == 1
    code, out = await ledger(db_url, "verify")
    assert code == 0, out
    assert (
        "seals 0 to 2, 6 sealed leaves (4 events recomputed, of them 1 anonymised; 2 erased)" in out
    )
    assert "1 not sealed yet" in out

    # A superuser rewrites a decision, around the append-only trigger.
    await as_superuser(
        db,
        "UPDATE consent_events SET event_type = 'accept-all' WHERE event_id = $1",
        uuid.UUID(target),
    )
    code, out = await ledger(db_url, "verify")
    assert code == 1
    assert f"event {target} (seq" in out
    assert "does not match its leaf" in out

    # Recomputing the leaf of the rewritten record, and storing it, moves the seal's root.
    row = await db.fetchrow(
        "SELECT e.*, v.content_sha256 FROM consent_events e JOIN consent_schema_versions v"
        " ON v.property = e.property AND v.version = e.schema_version WHERE event_id = $1",
        uuid.UUID(target),
    )
    assert row is not None
    await as_superuser(
        db,
        "UPDATE consent_events SET leaf = $2 WHERE event_id = $1",
        uuid.UUID(target),
        documented_leaf(row, row["content_sha256"]),
    )
    # The receipt kept with the event no longer holds its leaf...
    code, out = await ledger(db_url, "verify", "--since", "2")
    assert code == 1
    assert f"event {target} (seq" in out
    assert "does not hold its leaf" in out
    # ...and with the event unhooked from its receipt, the seal's root no longer matches.
    await as_superuser(
        db, "UPDATE consent_events SET receipt = NULL WHERE event_id = $1", uuid.UUID(target)
    )
    code, out = await ledger(db_url, "verify", "--since", "2")
    assert code == 1
    assert "seal 2: its root does not match" in out


async def test_verify_head_catches_seals_removed_from_the_end(
    app: ConsentAPI,
    client: httpx.AsyncClient,
    erase_key: dict[str, str],
    db: asyncpg.Connection,
    db_url: str,
    tmp_path: Path,
) -> None:
    heads: list[Path] = []
    for _ in range(3):
        await send(client, uuid.uuid4())
        await seal_now(app)
        code, out = await ledger(db_url, "head", "--json")
        assert code == 0, out
        heads.append(tmp_path / f"head-{len(heads)}.json")
        heads[-1].write_text(out)
    assert json.loads(heads[-1].read_text())["seal"] == 3
    assert (await ledger(db_url, "verify", "--head", str(heads[-1])))[0] == 0

    await as_superuser(db, "DELETE FROM ledger_seals WHERE id >= 2", tables=("ledger_seals",))
    code, out = await ledger(db_url, "verify", "--head", str(heads[-1]))
    assert code == 1
    assert "no longer holds seal 3 published earlier" in out
    assert (await ledger(db_url, "verify", "--head", str(heads[0])))[0] == 0
    # A file that is not a head is named, with what it lacks.
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    code, out = await ledger(db_url, "verify", "--head", str(empty))
    assert (code, out) == (
        1, f"error: {empty}: not a head written by `ledger head --json` (it has no 'seal')\n"
    )  # fmt: skip

    # A seal rewritten in place: its hash no longer matches its fields.
    await as_superuser(
        db, "UPDATE ledger_seals SET tree_size = 2 WHERE id = 1", tables=("ledger_seals",)
    )
    code, out = await ledger(db_url, "verify")
    assert code == 1
    assert "seal 1: its hash does not match its fields" in out


async def test_one_sealer_at_a_time_and_the_database_refuses_a_seal_that_does_not_link(
    app: ConsentAPI, client: httpx.AsyncClient, erase_key: dict[str, str], db_url: str
) -> None:
    for _ in range(5):
        await send(client, uuid.uuid4())
    engine = services(app).engine
    assert await seal(engine)
    results = await asyncio.gather(*(seal_ledger(engine, max_leaves=1) for _ in range(4)))
    assert sum(r or 0 for r in results) <= 5
    await seal_ledger(engine)
    assert (await ledger(db_url, "verify"))[0] == 0
    connection = await asyncpg.connect(db_url)  # the service's own role
    try:
        with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="does not extend"):
            await connection.execute(
                "INSERT INTO ledger_seals SELECT id + 1, first_seq, last_seq, tree_size, root,"
                " prev_hash, seal_hash, sealed_at FROM ledger_seals ORDER BY id DESC LIMIT 1"
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.execute("DELETE FROM ledger_seals WHERE id > 0")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.execute("DELETE FROM ledger_tombstones")
    finally:
        await connection.close()


async def test_an_anonymised_event_stays_protected_and_a_cleared_salt_is_no_disguise(
    app: ConsentAPI,
    client: httpx.AsyncClient,
    erase_key: dict[str, str],
    db: asyncpg.Connection,
    db_url: str,
) -> None:
    anonymised, kept = uuid.uuid4(), uuid.uuid4()
    await send(client, anonymised)
    target = await send(client, kept)
    response = await client.post(
        "/v1/dsr/erasures",
        json={"subject_id": str(anonymised), "mode": "anonymise"},
        headers=erase_key,
    )
    assert response.status_code == 200, response.text
    await seal_now(app)
    assert (await ledger(db_url, "verify"))[0] == 0

    # The anonymised event's decision, rewritten: its leaf is recomputed from what remains.
    await as_superuser(
        db, "UPDATE consent_events SET event_type = 'reject-all' WHERE anonymised_at IS NOT NULL"
    )
    code, out = await ledger(db_url, "verify")
    assert code == 1
    assert "does not match its leaf" in out
    await as_superuser(
        db, "UPDATE consent_events SET event_type = 'accept-all' WHERE anonymised_at IS NOT NULL"
    )
    assert (await ledger(db_url, "verify"))[0] == 0

    # Clearing a salt to pass a rewritten event off as anonymised.
    await as_superuser(
        db,
        "UPDATE consent_events SET event_type = 'reject-all', salt = NULL WHERE event_id = $1",
        uuid.UUID(target),
    )
    code, out = await ledger(db_url, "verify")
    assert code == 1
    assert f"event {target} (seq" in out
    assert "has no salt but is not anonymised" in out


@pytest.mark.usefixtures("erase_key")  # itsailor's schema published
async def test_verify_hashes_every_schema_version_again(
    app: ConsentAPI, client: httpx.AsyncClient, db: asyncpg.Connection, db_url: str
) -> None:
    """A leaf holds its version's content hash, not the content: a superuser who rewrites the text
    a person was shown, around the versions' immutability trigger, leaves every leaf matching.
    `verify` hashes each version's content again."""
    await send(client, uuid.uuid4())
    await seal_now(app)
    versions = await db.fetchval("SELECT count(*) FROM consent_schema_versions")
    code, out = await ledger(db_url, "verify")
    assert code == 0, out
    assert f"; {versions} schema versions;" in out
    await as_superuser(
        db,
        "UPDATE consent_schema_versions SET content = jsonb_set(content,"
        " '{categories,1,description}', '\"Rewritten after publication\"')"
        " WHERE property = 'itsailor' AND version = 1",
        tables=("consent_schema_versions",),
    )
    code, out = await ledger(db_url, "verify")
    assert code == 1
    assert (
        "ledger broken: schema version 1 of itsailor: its content does not hash to its"
        " content_sha256 (" in out
    ), out

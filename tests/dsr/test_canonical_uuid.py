"""A DSR request names a subject id in the one form the service writes, over the API and on the
command line: one person, one spelling in the audit trail (service/core/json_input.py,
`CanonicalUUID`)."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from service.cli import app as cli
from service.core.json_input import UUID_FORM
from service.core.logging import SINK
from tests.banner.test_canonical_uuid import LAX, NOT_TEXT
from tests.factories import api_key, bearer, event, example, published

EVENTS = "/v1/properties/itsailor/consent-events"
DETAIL = f"Input should be {UUID_FORM}"
REQUESTS = [
    ("/v1/dsr/history", "dsr:read", {}),
    ("/v1/dsr/exports", "dsr:read", {}),
    ("/v1/dsr/erasures", "dsr:erase", {}),
    ("/v1/dsr/withdrawals", "dsr:withdraw", {"reference": "ticket-1"}),
]


@pytest.mark.parametrize(("path", "scope", "extra"), REQUESTS, ids=[r[0] for r in REQUESTS])
async def test_a_subject_id_in_another_form_is_422_and_not_audited(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    db_url: str,
    path: str,
    scope: str,
    extra: dict[str, Any],
) -> None:
    await published(db_url, example("itsailor"))
    key = bearer(await api_key(db_url, scope))
    for spelling in [*LAX.values(), *NOT_TEXT.values()]:
        response = await client.post(path, json={"subject_id": spelling, **extra}, headers=key)
        assert response.status_code == 422, (spelling, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert {"pointer": "/body/subject_id", "detail": DETAIL} in response.json()["errors"]
    assert await db.fetchval("SELECT count(*) FROM dsr_audit") == 0


async def test_the_canonical_form_finds_the_subject(client: httpx.AsyncClient, db_url: str) -> None:
    await published(db_url, example("itsailor"))
    subject = uuid.uuid4()
    assert (await client.post(EVENTS, json=event(subject_id=subject))).status_code == 201
    key = bearer(await api_key(db_url, "dsr:read"))
    response = await client.post("/v1/dsr/history", json={"subject_id": str(subject)}, headers=key)
    assert response.status_code == 200, response.text
    assert [item["subject_id"] for item in response.json()["items"]] == [str(subject)]


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    root = logging.getLogger()  # the command's logging setup is undone, as tests/ops/test_cli.py
    handlers, level, target = root.handlers[:], root.level, SINK.target
    try:
        result = CliRunner().invoke(cli, list(args), env=env)
    finally:
        root.handlers[:], SINK.target = handlers, target
        root.setLevel(level)
    return result.exit_code, result.stderr


@pytest.mark.parametrize(
    "command",
    [["history"], ["export"], ["erase", "--dry-run"], ["withdraw", "--reference", "ticket-1"]],
)
def test_the_cli_holds_a_subject_id_to_the_same_form(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env from the checkout
    env = {
        "CONSENT_DATABASE_URL": db_url,
        "CONSENT_IP_HASH_SALT": "cli-test-key-0123456789-abcdefghijklmnop",
        "CONSENT_DATA_DIR": str(tmp_path / "data"),
        "CONSENT_ENV": "dev",
    }
    for spelling in LAX.values():
        code, stderr = run(env, "dsr", *command, "--subject-id", spelling)
        assert (code, stderr) == (2, f"error: --subject-id: {DETAIL}\n"), spelling
    code, stderr = run(env, "dsr", *command, "--subject-id", str(uuid.uuid4()))
    assert code == 0, stderr

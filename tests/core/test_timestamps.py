"""A client's time is RFC 3339 date-time text with an offset wherever it comes in (README, "API at
a glance"): a number or a string of digits is not Unix seconds, a date alone is not its
midnight, a time without an offset is in no zone. Each is a 422 problem naming the field, and
changes nothing; the same rule holds from the CLI. And a DSR identifier with NUL is refused before
anything is looked up or audited."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from typer.testing import CliRunner

from service.cli import app as cli
from tests.conftest import TEST_KEY
from tests.consent_schema.test_scheduled import SCHEMA, changed_content
from tests.factories import api_key, bearer, event, example, published

FORM = "an RFC 3339 date-time with an offset, such as 2027-01-01T00:00:00Z"
# Read as Unix seconds, a number or digits (1970-08-23 for 20270101), a date alone as its
# midnight, a time without offset in no zone; the space between date and time is refused too.
REFUSED: list[Any] = [
    20270101,
    "20270101",
    0,
    "1",
    1.5,
    "2027-01-01",
    "2027-01-01T00:00:00",
    "2027-01-01T00:00",
    "2027-01-01 00:00:00Z",
    "2027-01-01T00:00:00Z ",
    "yesterday",
    "2027-02-30T00:00:00Z",
    "2027-01-01T00:00:00+24:00",
    True,
]
EVENTS = "/v1/properties/itsailor/consent-events"
STATS = "/v1/properties/itsailor/stats"


def assert_refused(response: httpx.Response, pointer: str) -> None:
    assert response.status_code == 422, (pointer, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    errors = response.json()["errors"]
    assert any(e["pointer"] == pointer and FORM in e["detail"] for e in errors), errors
    assert "datetime or date" not in response.text  # a date alone is not valid


async def audit_rows(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM dsr_audit"))


async def test_a_version_takes_effect_only_at_an_rfc_3339_time(
    client: httpx.AsyncClient, db_url: str
) -> None:
    await published(db_url, example("itsailor"))
    writer = bearer(await api_key(db_url, "schemas:write"))
    body = {"material": True, "content": changed_content()}
    for value in REFUSED:
        answer = await client.post(
            f"{SCHEMA}/versions", json=body | {"effective_at": value}, headers=writer
        )
        assert_refused(answer, "/body/effective_at")
    listing = (await client.get(f"{SCHEMA}/versions")).json()
    assert (listing["current_version"], listing["pending_version"]) == (1, None)
    assert [item["version"] for item in listing["items"]] == [1]
    assert (await client.get(SCHEMA)).json()["version"] == 1

    later = datetime.now(UTC) + timedelta(days=40)
    for version, text in (
        (2, later.strftime("%Y-%m-%dT%H:%M:%S.5+02:00")),
        (3, later.strftime("%Y-%m-%dT%H:%M:%SZ")),
        (4, later.strftime("%Y-%m-%dt%H:%M:%Sz")),
    ):
        answer = await client.post(
            f"{SCHEMA}/versions", json=body | {"effective_at": text}, headers=writer
        )
        assert answer.status_code == 201, answer.text
        at = datetime.fromisoformat(answer.json()["effective_at"])
        assert at == datetime.fromisoformat(text.upper())
        listing = (await client.get(f"{SCHEMA}/versions")).json()
        assert (listing["current_version"], listing["pending_version"]) == (1, version)
        cancelled = await client.post(f"{SCHEMA}/versions/{version}/cancellation", headers=writer)
        assert cancelled.status_code == 200, cancelled.text
    assert (await client.get(SCHEMA)).json()["version"] == 1


async def test_dsr_since_and_until_are_rfc_3339_times(
    client: httpx.AsyncClient, db_url: str, db: asyncpg.Connection
) -> None:
    await published(db_url, example("itsailor"))
    reader = bearer(await api_key(db_url, "dsr:read"))
    eraser = bearer(await api_key(db_url, "dsr:erase"))
    subject = str(uuid.uuid4())
    assert (await client.post(EVENTS, json=event(subject_id=uuid.UUID(subject)))).status_code == 201
    for field in ("since", "until"):
        for value in REFUSED:
            query = {"subject_id": subject, field: value}
            for path, key in (
                ("/v1/dsr/history", reader),
                ("/v1/dsr/exports", reader),
                ("/v1/dsr/erasures", eraser),
            ):
                assert_refused(await client.post(path, json=query, headers=key), f"/body/{field}")
    assert await audit_rows(db) == 0

    for since, until, found in (
        ("2000-01-01T00:00:00Z", "2999-01-01T00:00:00.5+02:00", 1),
        ("2999-01-01t00:00:00z", None, 0),
        (None, "2000-01-01T00:00:00-05:00", 0),
    ):
        window = {"since": since, "until": until}
        query = {"subject_id": subject} | {k: v for k, v in window.items() if v is not None}
        answer = await client.post("/v1/dsr/history", json=query, headers=reader)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["items"]) == found
    assert await audit_rows(db) == 3
    assert (await db.fetchval("SELECT count(*) FROM consent_events")) == 1


async def test_nul_in_a_dsr_user_id_is_refused_before_the_audit(
    client: httpx.AsyncClient, db_url: str, db: asyncpg.Connection
) -> None:
    await published(db_url, example("itsailor"))
    reader = bearer(await api_key(db_url, "dsr:read"))
    eraser = bearer(await api_key(db_url, "dsr:erase"))
    withdrawer = bearer(await api_key(db_url, "dsr:withdraw"))
    for path, body, key in (
        ("/v1/dsr/history", {}, reader),
        ("/v1/dsr/exports", {}, reader),
        ("/v1/dsr/erasures", {}, eraser),
        ("/v1/dsr/withdrawals", {"reference": "T-1"}, withdrawer),
    ):
        for user_id in ("a\u0000", "\u0000"):
            answer = await client.post(path, json=body | {"user_id": user_id}, headers=key)
            assert answer.status_code == 422, (path, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            [error] = answer.json()["errors"]
            assert error["pointer"] == "/body/user_id"
            assert "NUL" in error["detail"]
    assert await audit_rows(db) == 0
    fine = await client.post("/v1/dsr/history", json={"user_id": "a"}, headers=reader)
    assert fine.status_code == 200, fine.text
    assert await audit_rows(db) == 1


async def test_stats_since_and_until_are_rfc_3339_times(
    client: httpx.AsyncClient, db_url: str
) -> None:
    await published(db_url, example("itsailor"))
    reader = bearer(await api_key(db_url, "stats:read"))
    window = {"since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"}
    for field in ("since", "until"):
        for value in REFUSED:
            text = str(value).lower() if isinstance(value, bool) else str(value)
            answer = await client.get(STATS, params=window | {field: text}, headers=reader)
            assert_refused(answer, f"/query/{field}")
    both = await client.get(STATS, params={"since": "1", "until": "2"}, headers=reader)
    assert_refused(both, "/query/since")
    assert_refused(both, "/query/until")

    for since, until in (
        ("2026-01-01T00:00:00Z", "2026-01-31T23:00:00.5-02:00"),
        ("2026-01-01t01:00:00+01:00", "2026-02-01t00:00:00z"),
    ):
        answer = await client.get(STATS, params={"since": since, "until": until}, headers=reader)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert datetime.fromisoformat(page["since"]) == datetime.fromisoformat(since.upper())
        assert datetime.fromisoformat(page["until"]) == datetime.fromisoformat(until.upper())


async def test_the_cli_reads_times_as_the_api_does(db_url: str) -> None:
    await published(db_url, example("itsailor"))
    env = {"CONSENT_DATABASE_URL": db_url, "CONSENT_IP_HASH_SALT": TEST_KEY}
    subject = ("--subject-id", str(uuid.uuid4()))
    stats = ("stats", "--property", "itsailor")

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, list(args), env=env)
        return result.exit_code, result.output

    for value in ("1", "20270101", "2027-01-01", "2027-01-01T00:00:00"):
        for args, option in (
            (("dsr", "history", *subject, "--since", value), "since"),
            (("dsr", "history", *subject, "--until", value), "until"),
            ((*stats, "--since", value, "--until", "2027-01-02T00:00:00Z"), "--since"),
            ((*stats, "--since", "2026-12-01T00:00:00Z", "--until", value), "--until"),
        ):
            code, output = await asyncio.to_thread(run, *args)
            assert code == 2, (args, output)
            assert option in output, output
            assert "RFC 3339 date-time with an offset" in output, output
    # Every other command's time option takes the same form: no compact or week dates either.
    for value in ("1", "2027-01-01", "20270101T000000Z", "2027-W01-1T00:00:00Z"):
        commands: list[tuple[tuple[str, ...], str]] = [
            (("schema", "publish", "examples/schemas/itsailor.yaml", "--effective-at", value),
             "--effective-at"),
            (("backup", "journal", "--since", value), "--since"),
            (("retention", "purge", "--dry-run", "--as-of", value), "--as-of"),
        ]  # fmt: skip
        for command, option in commands:
            code, output = await asyncio.to_thread(run, *command)
            assert code == 2, (command, output)
            assert f"{option}: {value!r} is not an RFC 3339 date-time" in output, output
    for args in (
        ("dsr", "history", *subject, "--since", "2026-01-01T00:00:00+01:00"),
        (*stats, "--since", "2026-12-01T00:00:00Z", "--until", "2027-01-02T00:00:00.5+02:00"),
    ):
        code, output = await asyncio.to_thread(run, *args)
        assert code == 0, (args, output)


async def test_a_bound_finer_than_a_microsecond_keeps_its_meaning(
    client: httpx.AsyncClient, db_url: str
) -> None:
    """Times are stored in whole microseconds; a bound given in nanoseconds (Go's RFC3339Nano)
    is compared as written: `since` a hair after an event leaves it out, `until` a hair after
    it takes it in. (Cut to microseconds, each would say the opposite.)"""
    await published(db_url, example("itsailor"))
    reader = bearer(await api_key(db_url, "dsr:read"))
    subject = uuid.uuid4()
    recorded = await client.post(EVENTS, json=event(subject_id=subject))
    assert recorded.status_code == 201
    at = datetime.fromisoformat(recorded.json()["recorded_at"])
    exact = at.strftime("%Y-%m-%dT%H:%M:%S.%f")

    async def found(**window: str) -> int:
        query = {"subject_id": str(subject), **window}
        answer = await client.post("/v1/dsr/history", json=query, headers=reader)
        assert answer.status_code == 200, answer.text
        return len(answer.json()["items"])

    assert await found(since=f"{exact}000Z") == 1  # the same instant, in nanoseconds
    assert await found(since=f"{exact}001Z") == 0
    assert await found(until=f"{exact}000Z") == 0
    assert await found(until=f"{exact}001Z") == 1
    late = await client.post(
        "/v1/dsr/history",
        json={"subject_id": str(subject), "until": "9999-12-31T23:59:59.9999991Z"},
        headers=reader,
    )
    assert_refused(late, "/body/until")

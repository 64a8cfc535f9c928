"""Stateless replicas: two `serve` processes on one database, as behind a load balancer
(docs/scaling.md, "Replicas"). What one learns, the other serves; what both are sent at once is
stored once; a DSR cursor from one continues on the other; the scheduled jobs never run twice at
once (one sealed chain)."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.factories import api_key, bearer, event, example, published
from tests.live import ROOT, service_env, serving

PROPERTY = "/v1/properties/itsailor"
# A replica's cache of "which version is current" lives this long (consent_schema/service.py).
SCHEMA_LAG_LIMIT_S = 2.0


@pytest.fixture
async def replicas(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """Two replicas of the service on this test's database, sealing every 0.2 s and purging
    what is due every 1.8 s, each on its own (the jobs' locks are in the database)."""
    await published(db_url, example("itsailor"))
    env = service_env(db_url, seal_seconds="0.2", retention_purge_hours="0.0005")
    async with (
        serving(env, tmp_path / "replica-a.log") as first,
        serving(env, tmp_path / "replica-b.log") as second,
    ):
        yield first, second


async def test_a_schema_published_through_one_replica_is_served_by_the_other_within_2_s(
    replicas: tuple[str, str], db_url: str
) -> None:
    first, second = replicas
    writer = bearer(await api_key(db_url, "schemas:write"))
    async with httpx.AsyncClient(timeout=5) as http:
        before = (await http.get(second + PROPERTY + "/schema")).json()["version"]
        content = example("itsailor").model_dump(mode="json")
        content["categories"][1]["description"] += " (reworded)"
        published_at = time.monotonic()
        answer = await http.post(
            first + PROPERTY + "/schema/versions", json={"content": content}, headers=writer
        )
        assert answer.status_code == 201, answer.text
        new = answer.json()["version"]
        assert new == before + 1
        while (await http.get(second + PROPERTY + "/schema")).json()["version"] != new:
            assert time.monotonic() - published_at < SCHEMA_LAG_LIMIT_S
            await asyncio.sleep(0.02)


async def test_one_event_sent_to_both_replicas_at_once_is_stored_once_with_one_record(
    replicas: tuple[str, str], db: asyncpg.Connection
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(10):
            body = event(subject_id=uuid.uuid4(), event_id=str(uuid.uuid4()))
            answers = await asyncio.gather(
                *(http.post(base + PROPERTY + "/consent-events", json=body) for base in replicas)
            )
            assert sorted(answer.status_code for answer in answers) == [200, 201], [
                answer.text for answer in answers
            ]
            records = [answer.json() for answer in answers]
            assert records[0] == records[1]
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 10
    assert await db.fetchval("SELECT count(*) FROM consent_event_ids") == 10


async def test_a_dsr_cursor_from_one_replica_continues_on_the_other(
    replicas: tuple[str, str], db_url: str
) -> None:
    reader = bearer(await api_key(db_url, "dsr:read"))
    subject = uuid.uuid4()
    kinds = ["accept-all", "reject-all", "accept-all", "withdraw", "accept-all", "reject-all"]
    async with httpx.AsyncClient(timeout=10) as http:
        for index, kind in enumerate(kinds):
            posted = await http.post(
                replicas[index % 2] + PROPERTY + "/consent-events",
                json=event(kind, subject_id=subject, event_id=str(uuid.uuid4())),
            )
            assert posted.status_code == 201, posted.text
        seen: list[dict[str, Any]] = []
        cursor = None
        for turn in range(len(kinds)):
            body: dict[str, Any] = {"subject_id": str(subject), "limit": 2}
            if cursor:
                body["cursor"] = cursor
            answer = await http.post(
                replicas[turn % 2] + "/v1/dsr/history", json=body, headers=reader
            )
            assert answer.status_code == 200, answer.text
            seen += answer.json()["items"]
            cursor = answer.json()["next_cursor"]
            if cursor is None:
                break
        whole = await http.post(
            replicas[0] + "/v1/dsr/history", json={"subject_id": str(subject)}, headers=reader
        )
    assert [item["event_type"] for item in seen] == kinds
    assert seen == whole.json()["items"]


async def test_the_scheduled_jobs_of_two_replicas_make_one_chain_of_seals(
    replicas: tuple[str, str], owner_url: str, db: asyncpg.Connection
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for round_ in range(6):
            bodies = [event(subject_id=uuid.uuid4(), event_id=str(uuid.uuid4())) for _ in range(8)]
            answers = await asyncio.gather(
                *(
                    http.post(replicas[index % 2] + PROPERTY + "/consent-events", json=body)
                    for index, body in enumerate(bodies)
                )
            )
            assert {answer.status_code for answer in answers} == {201}
            await asyncio.sleep(0.5 if round_ < 5 else 2.5)  # both sealers, and a purge each
    # Both replicas sealed and purged on their own schedules; the database let one at a time.
    assert (
        await db.fetchval(
            "SELECT count(*) FROM consent_events WHERE seq > (SELECT max(last_seq) FROM ledger_seals)"
        )
        == 0
    )
    seals = await db.fetch("SELECT id, first_seq, last_seq FROM ledger_seals ORDER BY id")
    assert len(seals) >= 2
    for previous, current in itertools.pairwise(seals):
        assert current["first_seq"] == previous["last_seq"]
    purges = await db.fetchval("SELECT count(*) FROM dsr_audit WHERE action = 'retention-purge'")
    assert purges >= 2
    verify = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "service", "ledger", "verify"],
        cwd=ROOT,
        env=service_env(owner_url),  # the replicas' receipt key, as the tables' owner
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "ledger verified" in verify.stdout

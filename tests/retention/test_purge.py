"""Retention (docs/retention.md): `retention purge --as-of` two years ahead removes exactly the
events past retention, as computed here independently from the rules, keeps a withdrawal while
the consent it withdrew is kept, audits every run, removes nothing the second time, and leaves a
ledger that still verifies; the service's own role may not purge."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from service.app import create_app
from service.cli import app as cli
from service.consent_schema.document import ConsentSchemaDocument, Retention
from service.core.pipeline import ConsentAPI
from service.state import of as services
from tests.conftest import TEST_KEY, TEST_RECEIPT_KEY, make_settings
from tests.factories import (
    APPLYING,
    Clock,
    api_key,
    applying_example,
    bearer,
    event,
    example,
    published,
)
from tests.ledger.test_ledger import ledger, seal_now

DAY = timedelta(days=1)


def with_retention(document: ConsentSchemaDocument, superseded: int, current: int) -> Any:
    return document.model_copy(
        update={"retention": Retention(superseded_days=superseded, current_days=current)}
    )


def purge(url: str, *args: str) -> tuple[int, str]:
    env = {
        "CONSENT_DATABASE_URL": url,
        "CONSENT_IP_HASH_SALT": TEST_KEY,
        "CONSENT_RECEIPT_KEY": TEST_RECEIPT_KEY,
    }
    result = CliRunner().invoke(cli, ["retention", "purge", *args], env=env)
    return result.exit_code, result.stdout + result.stderr


def due_by_the_rules(
    rows: list[asyncpg.Record], policy: dict[str, tuple[int, int]], as_of: datetime
) -> set[int]:
    """The rules of docs/retention.md, written again in Python: which seqs are due."""
    due: set[int] = set()
    histories: dict[tuple[Any, str], list[asyncpg.Record]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["seq"]):
        superseded_days, current_days = policy[row["property"]]
        if row["subject_id"] is None:
            if row["recorded_at"] + timedelta(days=current_days) <= as_of:
                due.add(row["seq"])
            continue
        histories[(row["subject_id"], row["property"])].append(row)
    for (_, property_name), history in histories.items():
        superseded_days, current_days = policy[property_name]
        groups: list[list[asyncpg.Record]] = [[]]
        for row in history:
            if row["event_type"] != "re-prompt":
                groups.append([])
            groups[-1].append(row)
        groups = [group for group in groups if group]
        for index, group in enumerate(groups):
            later = groups[index + 1] if index + 1 < len(groups) else None
            if later is not None:
                until = later[0]["recorded_at"] + timedelta(days=superseded_days)
            else:
                decision = next((r for r in group if r["event_type"] != "re-prompt"), group[0])
                until = decision["recorded_at"] + timedelta(days=current_days)
            if until > as_of:
                break  # nothing after a kept group goes either
            due.update(row["seq"] for row in group)
    return due


async def test_a_purge_removes_exactly_what_is_past_retention(
    app: ConsentAPI,
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    db_url: str,
    owner_url: str,
) -> None:
    await published(db_url, with_retention(example("itsailor"), 30, 400))
    # A policy that keeps replaced decisions longer than the latest one.
    await published(db_url, with_retention(applying_example(), 1000, 10))
    clock = Clock()
    services(app).clock = clock
    start = clock.now

    async def at(days: float, event_type: str, subject: uuid.UUID, prop: str = "itsailor") -> None:
        clock.now = start + days * DAY
        body = event(event_type, subject_id=subject)
        if event_type == "save-selection":
            body["categories"] = {"analytics": True}
        response = await client.post(f"/v1/properties/{prop}/consent-events", json=body)
        assert response.status_code == 201, response.text

    a, b, c, d, e, f, g = (uuid.uuid4() for _ in range(7))
    await at(0, "accept-all", a)
    await at(10, "withdraw", a)
    await at(11, "re-prompt", a)
    await at(0, "reject-all", b)
    await at(5, "re-prompt", b)
    await at(100, "accept-all", b)
    await at(0, "re-prompt", c)  # before any decision
    await at(2, "save-selection", c)
    await at(700, "accept-all", d)  # recent: kept
    await at(0, "accept-all", e)  # anonymised below
    await at(0, "accept-all", f, APPLYING)  # replaced after 1 day, kept 1000 days...
    await at(1, "withdraw", f, APPLYING)  # ...so its withdrawal stays too, though "due"
    await at(0, "accept-all", g, APPLYING)
    eraser = bearer(await api_key(db_url, "dsr:erase"))
    response = await client.post(
        "/v1/dsr/erasures", json={"subject_id": str(e), "mode": "anonymise"}, headers=eraser
    )
    assert response.status_code == 200, response.text

    as_of = start + 730 * DAY
    rows = await db.fetch(
        "SELECT seq, subject_id, property, event_type, recorded_at FROM consent_events"
    )
    expected = due_by_the_rules(rows, {"itsailor": (30, 400), APPLYING: (1000, 10)}, as_of)
    assert len(expected) == 3 + 3 + 2 + 1 + 1  # a, b, c, the anonymised e, g
    by_subject = {row["seq"]: row["subject_id"] for row in rows}
    assert {by_subject[seq] for seq in expected} == {a, b, c, None, g}

    # The service's own role may not purge: an as-of date ahead would purge early.
    code, out = await asyncio.to_thread(
        purge, db_url, "--allow-future", "--as-of", as_of.isoformat()
    )
    assert code == 1
    assert "runs as the owner of the tables" in out

    code, out = await asyncio.to_thread(
        purge, owner_url, "--dry-run", "--as-of", as_of.isoformat(), "--json"
    )
    assert code == 0, out
    dry = json.loads(out)
    assert (dry["due"], dry["deleted"], dry["dry_run"]) == (len(expected), 0, True)
    assert await db.fetchval("SELECT count(*) FROM consent_events") == len(rows)

    code, out = await asyncio.to_thread(
        purge, owner_url, "--allow-future", "--as-of", as_of.isoformat(), "--json"
    )
    assert code == 0, out
    done = json.loads(out)
    assert (done["due"], done["deleted"]) == (len(expected), len(expected))
    assert done["by_property"] == {
        "itsailor": {"superseded": 4, "current": 4, "anonymised": 1},
        APPLYING: {"current": 1},
    }
    left = {row["seq"] for row in await db.fetch("SELECT seq FROM consent_events")}
    assert left == {row["seq"] for row in rows} - expected

    code, out = await asyncio.to_thread(
        purge, owner_url, "--allow-future", "--as-of", as_of.isoformat(), "--json"
    )
    assert (code, json.loads(out)["deleted"]) == (0, 0)  # a second run removes nothing

    # Each run is audited, visible to the privacy team; the ledger still verifies, each
    # tombstone naming the purge that made it.
    auditor = bearer(await api_key(db_url, "audit:read"))
    audit = await client.get("/v1/dsr/audit", headers=auditor)
    assert audit.status_code == 200, audit.text
    runs = [r for r in audit.json()["items"] if r["action"] == "retention-purge"]
    assert sorted((r["matched"], r["deleted"], r["mode"] or "") for r in runs) == [
        (0, 0, "delete"),
        (len(expected), 0, ""),  # the dry run
        (len(expected), len(expected), "delete"),
    ]
    assert {r["identifier_type"] for r in runs} == {None}
    tombstones = await db.fetch("SELECT erasure FROM ledger_tombstones")
    assert {str(t["erasure"]) for t in tombstones} == {done["audit_id"]}
    assert len(tombstones) == len(expected)
    await seal_now(app)
    code, out = await ledger(db_url, "verify")
    assert code == 0, out


@pytest.mark.usefixtures("app")
async def test_statistics_outlive_a_purge(
    client: httpx.AsyncClient, db: asyncpg.Connection, db_url: str, owner_url: str
) -> None:
    """Aggregates hold nobody's data: a purge leaves the daily counts as they were."""
    await published(db_url, with_retention(example("itsailor"), 1, 1))
    for _ in range(3):
        response = await client.post(
            "/v1/properties/itsailor/consent-events", json=event("accept-all")
        )
        assert response.status_code == 201
    await db.execute("UPDATE consent_stats_seal SET sealed = (SELECT max(seq) FROM consent_events)")
    await db.execute("SELECT consent_stats_rollup(1000)")
    before = await db.fetchval("SELECT sum(events) FROM consent_stats_daily")
    later = (datetime.now().astimezone() + 10 * DAY).isoformat()
    code, out = await asyncio.to_thread(
        purge, owner_url, "--allow-future", "--as-of", later, "--json"
    )
    assert (code, json.loads(out)["deleted"]) == (0, 3), out
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 0
    assert await db.fetchval("SELECT sum(events) FROM consent_stats_daily") == before == 3


async def test_serve_purges_what_is_due_now_one_at_a_time(
    db: asyncpg.Connection, db_url: str, tmp_path: Path
) -> None:
    """CONSENT_RETENTION_PURGE_HOURS: the service's role purges what is due now (never what a
    later date would), one purge at a time, audited as `serve`."""
    await published(db_url, with_retention(example("itsailor"), 1, 5))
    settings = make_settings(db_url, tmp_path, retention_purge_hours=0.0002)  # 0.72 s
    app = create_app(settings)
    clock = Clock(datetime.now(UTC) - 30 * DAY)
    async with app.router.lifespan_context(app):
        services(app).clock = clock
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            old = await http.post("/v1/properties/itsailor/consent-events", json=event())
            clock.now = datetime.now(UTC) - DAY  # within current_days: kept
            recent = await http.post("/v1/properties/itsailor/consent-events", json=event())
            assert (old.status_code, recent.status_code) == (201, 201)
            for _ in range(100):
                left = await db.fetch("SELECT event_id FROM consent_events")
                if len(left) == 1:
                    break
                await asyncio.sleep(0.1)
    assert [str(row["event_id"]) for row in left] == [recent.json()["event_id"]]
    runs = await db.fetch(
        "SELECT actor, deleted FROM dsr_audit WHERE action = 'retention-purge' ORDER BY seq"
    )
    assert runs[0]["actor"] == "serve"
    assert sum(run["deleted"] for run in runs) == 1
    # Another purge running: the scheduled one returns at once, purging nothing.
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock($1)", 0x636F6E73656E7402)
        api = await asyncpg.connect(db_url)
        try:
            assert (
                await api.fetchval("SELECT consent_retention_purge_due(gen_random_uuid())") is None
            )
        finally:
            await api.close()


async def test_the_scheduled_purge_is_timed_from_the_last_one_not_from_each_start(
    db: asyncpg.Connection, db_url: str, tmp_path: Path
) -> None:
    """A timer in each worker's memory started from zero at each start: a service restarted
    daily with CONSENT_RETENTION_PURGE_HOURS=24 never purged, and N workers purged N times. The
    schedule is now the audit trail's: a start with no purge in the last 24 hours purges at
    once, and a start after one does not."""
    await published(db_url, with_retention(example("itsailor"), 1, 5))

    async def serve_a_moment() -> None:
        app = create_app(make_settings(db_url, tmp_path, retention_purge_hours=24))
        async with app.router.lifespan_context(app):
            await asyncio.sleep(1.0)

    async def purges() -> int:
        return int(
            await db.fetchval(
                "SELECT count(*) FROM dsr_audit"
                " WHERE action = 'retention-purge' AND mode IS NOT NULL"
            )
        )

    await serve_a_moment()
    assert await purges() == 1  # none in the last 24 hours: at start
    await serve_a_moment()
    await serve_a_moment()
    assert await purges() == 1  # restarted within the 24 hours: not again

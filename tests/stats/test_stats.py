"""Statistics (docs/stats.md): hand-computed counts, GPC/DNT applied, erasures lowering them, and
exactness against a COUNT over the stored events, for whole hours and parts of hours."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from service.cli import app as cli
from service.core.pipeline import ConsentAPI
from service.state import of as services
from service.stats.rollup import seal_and_roll_up
from tests.conftest import TEST_KEY
from tests.factories import APPLYING, Clock, api_key, applying_example, bearer, event, published

EVENTS = f"/v1/properties/{APPLYING}/consent-events"
STATS = f"/v1/properties/{APPLYING}/stats"
DAY1 = datetime(2026, 1, 15, tzinfo=UTC)
OPTIONAL = ("analytics", "functional", "marketing")


@pytest.fixture
async def clock(app: ConsentAPI, db_url: str) -> Clock:
    await published(db_url, applying_example())
    services(app).clock = clock = Clock(DAY1 + timedelta(hours=9, minutes=30))
    return clock


@pytest.fixture
async def reader(db_url: str) -> dict[str, str]:
    return bearer(await api_key(db_url, "stats:read"))


async def send(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> None:
    response = await client.post(EVENTS, json=body, headers=headers)
    assert response.status_code == 201, response.text


async def stats(
    client: httpx.AsyncClient, headers: dict[str, str], since: datetime, until: datetime
) -> list[dict[str, Any]]:
    response = await client.get(
        STATS, params={"since": since.isoformat(), "until": until.isoformat()}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return list(response.json()["items"])


def item(
    day: str, events: dict[str, int], categories: dict[str, tuple[int, int]], gpc: int, dnt: int
) -> dict[str, Any]:
    all_types = dict.fromkeys(
        ("accept-all", "reject-all", "save-selection", "withdraw", "re-prompt"), 0
    )
    return {
        "day": day,
        "schema_version": 1,
        "events": {**all_types, **events},
        "decisions": sum(n for t, n in events.items() if t != "re-prompt"),
        "categories": {k: {"granted": g, "denied": d} for k, (g, d) in categories.items()},
        "signals": {"gpc": gpc, "dnt": dnt},
    }


async def test_counts_by_hand_with_signals_applied_and_erasures_lowering_them(
    client: httpx.AsyncClient, clock: Clock, reader: dict[str, str], db_url: str
) -> None:
    a, b, c, d, e, f = (uuid.uuid4() for _ in range(6))
    await send(client, event("accept-all", subject_id=a))  # 09:30
    clock.advance(hours=1)
    await send(client, event("reject-all", subject_id=b))  # 10:30
    clock.advance(hours=1)
    selection = {"analytics": True, "functional": False, "marketing": False}
    await send(client, event("save-selection", subject_id=c, categories=selection))  # 11:30
    clock.advance(hours=1)
    await send(client, event("accept-all", subject_id=d), **{"Sec-GPC": "1"})  # 12:30, applied
    clock.advance(hours=1)
    await send(client, event("re-prompt", subject_id=e))  # 13:30
    clock.advance(days=1)
    await send(client, event("withdraw", subject_id=a))  # day 2, 13:30
    await send(client, event("accept-all", subject_id=f), DNT="1")  # applied: all off

    day1 = item(
        "2026-01-15",
        {"accept-all": 2, "reject-all": 1, "save-selection": 1, "re-prompt": 1},
        {"analytics": (2, 2), "functional": (1, 3), "marketing": (1, 3)},
        gpc=1,
        dnt=0,
    )
    day2 = item(
        "2026-01-16",
        {"withdraw": 1, "accept-all": 1},
        dict.fromkeys(OPTIONAL, (0, 2)),
        gpc=0,
        dnt=1,
    )
    assert await stats(client, reader, DAY1, DAY1 + timedelta(days=7)) == [day1, day2]

    # From 11:10 on day 1 (the rest of that hour counted from the events) to 01:00 on day 2.
    since = DAY1 + timedelta(hours=11, minutes=10)
    part = await stats(client, reader, since, DAY1 + timedelta(hours=25))
    assert part == [
        item(
            "2026-01-15",
            {"save-selection": 1, "accept-all": 1, "re-prompt": 1},
            {"analytics": (1, 1), "functional": (0, 2), "marketing": (0, 2)},
            gpc=1,
            dnt=0,
        )
    ]

    # A deleting erasure lowers the counts; an anonymising one keeps the rows, and the counts.
    eraser = bearer(await api_key(db_url, "dsr:erase"))
    for body in ({"subject_id": str(c)}, {"subject_id": str(b), "mode": "anonymise"}):
        response = await client.post("/v1/dsr/erasures", json=body, headers=eraser)
        assert response.status_code == 200, response.text
    day1_after = item(
        "2026-01-15",
        {"accept-all": 2, "reject-all": 1, "re-prompt": 1},
        {"analytics": (1, 2), "functional": (1, 2), "marketing": (1, 2)},
        gpc=1,
        dnt=0,
    )
    assert await stats(client, reader, DAY1, DAY1 + timedelta(days=7)) == [day1_after, day2]


async def test_exact_against_a_count_over_the_events(
    app: ConsentAPI,
    client: httpx.AsyncClient,
    clock: Clock,
    reader: dict[str, str],
    db_url: str,
    owner_url: str,
) -> None:
    rng = random.Random(20261128)
    subjects = [uuid.uuid4() for _ in range(40)]
    engine = services(app).engine
    for n in range(300):
        if n in (100, 220):  # some events in the tables, the rest counted from the events
            await seal_and_roll_up(engine)
        clock.advance(minutes=rng.randint(1, 90))
        event_type = rng.choice(
            ["accept-all", "reject-all", "save-selection", "withdraw", "re-prompt"]
        )
        fields: dict[str, Any] = {}
        if event_type == "save-selection":
            fields["categories"] = {key: rng.random() < 0.5 for key in OPTIONAL}
        headers = {}
        if rng.random() < 0.2:
            headers["Sec-GPC"] = "1"
        if rng.random() < 0.1:
            headers["DNT"] = "1"
        await send(client, event(event_type, subject_id=rng.choice(subjects), **fields), **headers)
    eraser = bearer(await api_key(db_url, "dsr:erase"))
    for subject in subjects[:5]:
        response = await client.post(
            "/v1/dsr/erasures", json={"subject_id": str(subject)}, headers=eraser
        )
        assert response.status_code == 200

    connection = await asyncpg.connect(owner_url)
    try:
        rows = await connection.fetch(
            "SELECT recorded_at, event_type, gpc, dnt, effective::text FROM consent_events"
        )
    finally:
        await connection.close()
    end = clock.now + timedelta(hours=1)
    ranges = [
        (DAY1, end),  # whole days, and the part of the last
        (DAY1 + timedelta(hours=13, minutes=7), end - timedelta(hours=30)),  # parts at both ends
        (DAY1 + timedelta(days=2), DAY1 + timedelta(days=4)),  # whole days only
    ]
    for since, until in ranges:
        assert await stats(client, reader, since, until) == expected(rows, since, until)
    await seal_and_roll_up(engine)  # and with every event in the tables
    for since, until in ranges:
        assert await stats(client, reader, since, until) == expected(rows, since, until)


def expected(rows: list[asyncpg.Record], since: datetime, until: datetime) -> list[dict[str, Any]]:
    import json

    days: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "events": defaultdict(int),
            "cats": defaultdict(lambda: [0, 0]),
            "gpc": 0,
            "dnt": 0,
        }
    )
    for row in rows:
        if not since <= row["recorded_at"] < until:
            continue
        day = days[row["recorded_at"].astimezone(UTC).date().isoformat()]
        day["events"][row["event_type"]] += 1
        day["gpc"] += row["gpc"]
        day["dnt"] += row["dnt"]
        if row["event_type"] != "re-prompt":
            for key, on in json.loads(row["effective"]).items():
                if key in OPTIONAL:
                    day["cats"][key][0 if on else 1] += 1
    return [
        item(
            name,
            dict(day["events"]),
            {key: tuple(day["cats"][key]) for key in OPTIONAL},
            gpc=day["gpc"],
            dnt=day["dnt"],
        )
        for name, day in sorted(days.items())
    ]


async def test_the_scope_the_range_and_the_property_are_checked(
    client: httpx.AsyncClient, clock: Clock, reader: dict[str, str], db_url: str
) -> None:
    window = {"since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"}
    assert (await client.get(STATS, params=window)).status_code == 401
    wrong = bearer(await api_key(db_url, "dsr:read"))
    assert (await client.get(STATS, params=window, headers=wrong)).status_code == 403
    for params, pointer in (
        ({"since": window["until"], "until": window["since"]}, "/query/until"),
        ({"since": "2026-01-01T00:00:00", "until": window["until"]}, "/query/since"),  # no offset
        ({"since": "2016-01-01T00:00:00Z", "until": window["until"]}, "/query/until"),  # > 3660 d
        ({"until": window["until"]}, "/query/since"),
        # Year 0 in UTC, and past 9999: the parameter at fault is named.
        ({"since": "0001-01-01T00:30:00+01:00", "until": window["until"]}, "/query/since"),
        ({"since": "9999-12-31T12:00:00Z", "until": "9999-12-31T23:59:59-05:00"}, "/query/since"),
    ):
        response = await client.get(STATS, params=params, headers=reader)
        assert response.status_code == 422, (params, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert [error["pointer"] for error in response.json()["errors"]] == [pointer], params
    year_zero = {"since": "0001-01-01T00:30:00+01:00", "until": window["until"]}
    assert (await client.get(STATS, params=year_zero, headers=reader)).json()["detail"] == (
        "/query/since: since must be at or after 0001-01-02T00:00:00Z and before "
        "9999-12-31T00:00:00Z"
    )
    missing = await client.get("/v1/properties/nosuch/stats", params=window, headers=reader)
    assert missing.status_code == 404
    assert missing.json()["detail"] == "there is no property named 'nosuch'"
    # The property is a property name, as on every other route: checked before the database.
    for name in ("its%00sailor", "ITSAILOR", "a" * 3000, "-itsailor"):
        bad = await client.get(f"/v1/properties/{name}/stats", params=window, headers=reader)
        assert bad.status_code == 422, (name[:20], bad.text[:200])
        assert bad.json()["errors"][0]["pointer"] == "/path/property"
        assert len(bad.content) < 1000


async def test_the_cli_prints_the_same_counts(
    client: httpx.AsyncClient, clock: Clock, reader: dict[str, str], db_url: str
) -> None:
    await send(client, event("accept-all"), **{"Sec-GPC": "1"})
    window = ("--since", "2026-01-15T00:00:00Z", "--until", "2026-01-16T00:00:00Z")
    env = {"CONSENT_DATABASE_URL": db_url, "CONSENT_IP_HASH_SALT": TEST_KEY}

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["stats", "--property", APPLYING, *window, *args], env=env)
        return result.exit_code, result.stdout

    code, out = await asyncio.to_thread(run, "--json")
    assert code == 0
    api = await client.get(STATS, params={"since": window[1], "until": window[3]}, headers=reader)
    import json

    assert json.loads(out) == api.json()
    code, out = await asyncio.to_thread(run)
    assert code == 0
    assert out.strip() == (
        "2026-01-15 v1: 1 decision(s) (accept-all 1); opted in: analytics 0/1, functional 0/1, "
        "marketing 0/1; gpc 1, dnt 0"
    )


async def test_a_withdrawal_the_dsr_team_entered_is_a_decision_like_any_other(
    client: httpx.AsyncClient, clock: Clock, reader: dict[str, str], db_url: str
) -> None:
    subject = uuid.uuid4()
    await send(client, event("accept-all", subject_id=subject))
    withdrawer = bearer(await api_key(db_url, "dsr:withdraw"))
    response = await client.post(
        "/v1/dsr/withdrawals",
        json={"subject_id": str(subject), "reference": "T-9"},
        headers=withdrawer,
    )
    assert response.status_code == 201, response.text
    [day] = await stats(client, reader, DAY1, DAY1 + timedelta(days=1))
    assert day["events"]["withdraw"] == 1
    assert day["decisions"] == 2
    assert day["categories"]["analytics"] == {"granted": 1, "denied": 1}

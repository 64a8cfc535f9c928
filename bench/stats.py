"""Statistics on a large event table: latency of GET /v1/properties/{p}/stats for 90-day ranges,
and exactness against a COUNT over the events.

    uv run python bench/stats.py                       # 10M events, embedded PostgreSQL
    uv run python bench/stats.py --size 1M --database-url postgresql://postgres@127.0.0.1/postgres

The events are generated server-side (bench/reads.py's rows: one every 7 seconds back from now,
SECONDS_APART, so 10M cover about 27 months), then rolled up into the statistics tables as the
service does, in the background (docs/stats.md, "Rollup"). Then `--tail` more events are added and left out of the
tables, and the service measured runs no rollup: every request counts that tail from the events,
as a request does just before a rollup (the default, 10,000, is more than one rollup interval, a
second, of the service at the peak rate bench/run.py measures: about 7,500 events a second). Requests are sent one at a time (what a console does), for random
90-day ranges that start at a UTC midnight and, separately, at a random second (both ends then
inside a day).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.reads import SECONDS_APART, fill, parse_size
from bench.run import cli, database, free_port, running, serve_command, service_env

# A COUNT over the events, grouped as the API groups them (optional keys of itsailor only).
EXACT = """
SELECT (recorded_at AT TIME ZONE 'UTC')::date AS day, event_type, count(*) AS n,
       count(*) FILTER (WHERE gpc) AS gpc, count(*) FILTER (WHERE dnt) AS dnt,
       count(*) FILTER (WHERE event_type <> 're-prompt' AND (effective->>'analytics')::boolean)
           AS analytics_granted,
       count(*) FILTER (WHERE event_type <> 're-prompt' AND NOT (effective->>'analytics')::boolean)
           AS analytics_denied
FROM consent_events
WHERE property = 'itsailor' AND recorded_at >= $1 AND recorded_at < $2
GROUP BY 1, 2
"""


async def roll_up(db_url: str) -> tuple[int, float]:
    """What the service's rollup does every few seconds, for everything stored."""
    connection = await asyncpg.connect(db_url, command_timeout=3600)
    try:
        start = time.perf_counter()
        # A seal gives up while an (auto)vacuum or analyze holds the table: as the service would,
        # try again.
        while True:
            try:
                if await connection.fetchval("SELECT consent_stats_seal()") is not None:
                    break
            except asyncpg.LockNotAvailableError:
                pass
            await asyncio.sleep(1)
        total = 0
        while covered := await connection.fetchval("SELECT consent_stats_rollup(1000000)"):
            total += covered
        return total, time.perf_counter() - start
    finally:
        await connection.close()


def get(url: str, key: str) -> tuple[float, dict[str, Any]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as answer:
        body = json.loads(answer.read())
    return (time.perf_counter() - start) * 1000, body


def url_for(base: str, since: datetime, until: datetime) -> str:
    query = urllib.parse.urlencode({"since": since.isoformat(), "until": until.isoformat()})
    return f"{base}/v1/properties/itsailor/stats?{query}"


def percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p99": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 2),
        "max": round(ordered[-1], 2),
    }


async def exact_counts(db_url: str, since: datetime, until: datetime) -> dict[str, Any]:
    connection = await asyncpg.connect(db_url, command_timeout=3600)
    try:
        rows = await connection.fetch(EXACT, since, until)
    finally:
        await connection.close()
    days: dict[str, dict[str, Any]] = {}
    for row in rows:
        day = days.setdefault(
            row["day"].isoformat(), {"events": {}, "gpc": 0, "dnt": 0, "analytics": [0, 0]}
        )
        day["events"][row["event_type"]] = row["n"]
        day["gpc"] += row["gpc"]
        day["dnt"] += row["dnt"]
        day["analytics"][0] += row["analytics_granted"]
        day["analytics"][1] += row["analytics_denied"]
    return days


def from_api(items: list[dict[str, Any]]) -> dict[str, Any]:
    days: dict[str, Any] = {}
    for item in items:  # one schema version here
        days[item["day"]] = {
            "events": {t: n for t, n in item["events"].items() if n},
            "gpc": item["signals"]["gpc"],
            "dnt": item["signals"]["dnt"],
            "analytics": [
                item["categories"]["analytics"]["granted"],
                item["categories"]["analytics"]["denied"],
            ],
        }
    return days


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="PostgreSQL server to use (default: embedded)")
    parser.add_argument(
        "--database",
        help="an existing database to use as it is (migrated here, filled up to --size, kept)",
    )
    parser.add_argument("--size", default="10M", help="events in the table (default 10M)")
    parser.add_argument("--requests", type=int, default=300, help="requests per kind of range")
    parser.add_argument(
        "--tail", type=int, default=10_000, help="events left out of the tables (default 10000)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    args = parser.parse_args()
    size = parse_size(args.size)
    log_dir = Path(tempfile.mkdtemp(prefix="consent-bench-stats-"))
    with (
        contextlib.nullcontext(args.database)
        if args.database
        else database(args.database_url, args.keep)
    ) as db_url:
        env = service_env(db_url)
        started = time.perf_counter()
        cli(env, "migrate")
        print(f"migrated in {time.perf_counter() - started:.1f} s")
        cli(env, "schema", "publish", "examples/schemas/itsailor.yaml")
        key = json.loads(
            cli(env, "keys", "create", "--name", "bench", "--scopes", "stats:read", "--json")
        )["secret"]
        print(f"filling the event table to {size:,} rows ...")
        rows, _, seconds = asyncio.run(fill(db_url, size))
        print(f"  {rows:,} rows in {seconds:.0f} s")
        rolled, rollup_seconds = asyncio.run(roll_up(db_url))
        print(f"  rolled up {rolled:,} sequence numbers in {rollup_seconds:.1f} s")
        rows, _, _ = asyncio.run(fill(db_url, rows + args.tail))
        print(f"  and {args.tail:,} more events left to the reads (the tail)")
        env["CONSENT_SEAL_SECONDS"] = "0"
        now = datetime.now(UTC)
        oldest = now - timedelta(seconds=size * SECONDS_APART)
        span_days = max(1, (now - oldest).days - 90)
        rng = random.Random(1)
        port = free_port()
        with running(serve_command(port, 1), env, port, "/readyz", log_dir / "serve.log") as server:
            results: dict[str, Any] = {
                "rows": rows,
                "tail": args.tail,
                "load_seconds": round(seconds, 1),
                "rollup_seconds": round(rollup_seconds, 1),
            }
            for name in ("midnight", "any_second"):
                times = []
                for i in range(args.requests + 20):
                    start = oldest + timedelta(days=rng.randint(0, span_days))
                    if name == "midnight":
                        start = start.replace(hour=0, minute=0, second=0, microsecond=0)
                    else:
                        start += timedelta(seconds=rng.randint(0, 86399))
                    elapsed, _ = get(url_for(server.base, start, start + timedelta(days=90)), key)
                    if i >= 20:  # the first requests warm the caches
                        times.append(elapsed)
                results[f"range_90d_{name}_ms"] = percentiles(times)
                print(f"  90-day range from a {name.replace('_', ' ')}: {percentiles(times)} ms")
            since = (now - timedelta(days=95)).replace(hour=0, minute=0, second=0, microsecond=0)
            since += timedelta(hours=7, minutes=13)
            until = since + timedelta(days=90)
            _, body = get(url_for(server.base, since, until), key)
            exact = asyncio.run(exact_counts(db_url, since, until))
            results["exact"] = from_api(body["items"]) == exact
            print(
                f"  the API equals a COUNT over the events ({since} to {until}): {results['exact']}"
            )
    out = Path(__file__).parent / "results" / f"stats-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"written to {out}")
    if not results["exact"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

"""Retention purge on a large table: a month of events dropped whole, and a month deleted row by
row (docs/retention.md, "The purge").

    uv run python bench/purge.py                      # 1M events a month, embedded PostgreSQL
    uv run python bench/purge.py --events 200K --database-url postgresql://postgres@127.0.0.1/postgres

Two past months get `--events` each (distinct visitors, one decision each, generated
server-side with ids, bytea hashes and stand-in leaves). In the second month one visitor decided
again yesterday, so the month is never all due at once. Then, as the owner, the function
`consent-service retention purge [--dry-run] --as-of` calls (timed in the database, without the
command's start):

1. as of the day every event of the first month is past `current_days`: that month is dropped
   whole (its leaves kept as tombstones);
2. as of a date when the second month is due but for the one replaced decision: its events are
   deleted row by row, through the erasure path.

Each is timed (a dry run first, then the purge), and the event table's size is printed before
and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.reads import parse_size
from bench.run import cli, database, service_env

CURRENT_DAYS = 1460  # examples/schemas/itsailor.yaml: retention.current_days

LOAD = """
WITH rows AS MATERIALIZED (
    SELECT gen_random_uuid() AS event_id, gen_random_uuid() AS subject_id,
           $1::timestamptz + make_interval(secs => i * $3::double precision) AS recorded_at, i
    FROM generate_series(0, $2::bigint - 1) AS i
), ids AS (
    INSERT INTO consent_event_ids (event_id, recorded_at) SELECT event_id, recorded_at FROM rows
)
INSERT INTO consent_events (event_id, property, subject_id, event_type, schema_version, choices,
    effective, gpc, dnt, signals_applied, ip_hash, hash_key_id, user_agent, request_hash,
    recorded_at, salt, identity, leaf)
SELECT event_id, 'itsailor', subject_id, 'accept-all', 1,
    '{"necessary": true, "functional": true, "analytics": true, "marketing": true}',
    '{"necessary": true, "functional": true, "analytics": true, "marketing": true}',
    false, false, '[]', sha256(('ip-' || i % 100000)::bytea), 'bench', 'Mozilla/5.0',
    sha256(('request-' || event_id)::bytea), recorded_at,
    substring(sha256(('salt-' || event_id)::bytea) FROM 1 FOR 16),
    sha256(('identity-' || event_id)::bytea), sha256(('leaf-' || event_id)::bytea)
FROM rows
"""
# One visitor of the second month decides again now: that month's decision is replaced, not due
# until superseded_days later.
AGAIN = """
WITH first AS (
    SELECT subject_id FROM consent_events WHERE recorded_at >= $1 ORDER BY seq LIMIT 1
), rows AS MATERIALIZED (
    SELECT gen_random_uuid() AS event_id, subject_id, now() - interval '1 day' AS recorded_at
    FROM first
), ids AS (
    INSERT INTO consent_event_ids (event_id, recorded_at) SELECT event_id, recorded_at FROM rows
)
INSERT INTO consent_events (event_id, property, subject_id, event_type, schema_version, choices,
    effective, gpc, dnt, signals_applied, request_hash, recorded_at, salt, identity, leaf)
SELECT event_id, 'itsailor', subject_id, 'reject-all', 1, '{"necessary": true}',
    '{"necessary": true}', false, false, '[]', sha256(event_id::text::bytea), recorded_at,
    substring(sha256(event_id::text::bytea) FROM 1 FOR 16), sha256(event_id::text::bytea),
    sha256(event_id::text::bytea)
FROM rows
"""
SIZE = (
    "SELECT pg_size_pretty(sum(pg_total_relation_size(relid))) FROM"
    " pg_partition_tree('consent_events')"
)


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def load(db_url: str, events: int) -> tuple[datetime, float]:
    now = datetime.now(UTC)
    first = month_start(now - timedelta(days=26 * 30))
    second = month_start(first + timedelta(days=32))
    connection = await asyncpg.connect(db_url, command_timeout=3600)
    try:
        started = time.perf_counter()
        await connection.execute("SELECT consent_events_add_months($1, now())", first)
        for start in (first, second):
            seconds = (month_start(start + timedelta(days=32)) - start).total_seconds()
            await connection.execute(LOAD, start, events, seconds / events)
        await connection.execute(AGAIN, second)
        await connection.execute("VACUUM ANALYZE consent_events")
        await connection.execute("VACUUM ANALYZE consent_event_ids")
        return second, time.perf_counter() - started
    finally:
        await connection.close()


async def size(db_url: str) -> str:
    connection = await asyncpg.connect(db_url)
    try:
        return str(await connection.fetchval(SIZE))
    finally:
        await connection.close()


async def purge(db_url: str, as_of: datetime, *, dry_run: bool) -> tuple[dict[str, Any], float]:
    """What `consent-service retention purge [--dry-run] --as-of` runs, as the owner, timed."""
    connection = await asyncpg.connect(db_url, command_timeout=3600)
    try:
        started = time.perf_counter()
        found = await connection.fetchval(
            "SELECT consent_retention_purge($1, gen_random_uuid(), 'bench', $2)", as_of, dry_run
        )
        return json.loads(found), time.perf_counter() - started
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="PostgreSQL server to use (default: embedded)")
    parser.add_argument("--events", default="1M", help="events in each month (default 1M)")
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    args = parser.parse_args()
    events = parse_size(args.events)
    with database(args.database_url, args.keep) as db_url:
        env = service_env(db_url)
        cli(env, "migrate")
        cli(env, "schema", "publish", "examples/schemas/itsailor.yaml")
        print(f"loading {events:,} events into each of two past months ...")
        second, seconds = asyncio.run(load(db_url, events))
        print(f"  loaded in {seconds:.0f} s; consent_events: {asyncio.run(size(db_url))}")
        steps = (
            ("a month dropped whole", month_start(second) + timedelta(days=CURRENT_DAYS)),
            # The second month is past current_days, the replaced decision not yet past
            # superseded_days (1095) after yesterday.
            ("a month row by row", datetime.now(UTC) + timedelta(days=900)),
        )
        for name, as_of in steps:
            dry, dry_seconds = asyncio.run(purge(db_url, as_of, dry_run=True))
            done, done_seconds = asyncio.run(purge(db_url, as_of, dry_run=False))
            print(
                f"{name}: due {dry['due']:,} (dry run {dry_seconds:.2f} s); deleted"
                f" {done['deleted']:,}, {done['partitions_dropped']} partitions dropped,"
                f" in {done_seconds:.2f} s"
            )
        print(f"consent_events after: {asyncio.run(size(db_url))}")


if __name__ == "__main__":
    main()

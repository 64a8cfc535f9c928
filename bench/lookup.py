"""A lone state look-up, timed in the process that makes it.

A banner's state GET waits for `LatestDecisions.latest` (docs/architecture.md, "The group read").
Under load many look-ups share one statement; on a quiet site each is alone, and then what it
costs is one borrow from the pool, one statement and its answer. This script makes look-ups one
at a time, the next sent when the last is answered, on a table of generated events
(bench/reads.py's fill), and prints for each round the µs per look-up: wall time, this process's
CPU, and PostgreSQL's CPU (every postgres process on the machine).

Each round is made twice, one after the other: by the service's reader (`LatestDecisions`, whose
statement goes on the pooled connection's own asyncpg connection), and by the same statement sent
through SQLAlchemy's execution on the same pool, as the reader sent it before (`via SQLAlchemy`,
built here as it was built there). Interleaved in one process, the two see the same machine: on a
shared one, whose speed drifts from minute to minute, runs made minutes apart do not.

    uv run python bench/lookup.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from sqlalchemy import DateTime, Integer, Text, Uuid, bindparam, column, func, select
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.reads import fill, parse_size, subject_id
from bench.run import cli, database, database_cpu_seconds, service_env
from service.core.db import autocommit, create_engine
from service.ledger.decisions import LatestDecisions

# The reader's statement as SQLAlchemy built and sent it before it went to the driver's
# connection (until c1f19d4): built once, its values bound per look-up.
VIA_SQLALCHEMY = select(
    func.consent_latest_decisions(
        bindparam("subjects", type_=ARRAY(Uuid())), bindparam("properties", type_=ARRAY(Text()))
    ).table_valued(
        column("property", Text()),
        column("subject_id", Uuid()),
        column("event_type", Text()),
        column("source", Text()),
        column("schema_version", Integer()),
        column("choices", JSONB()),
        column("recorded_at", DateTime(timezone=True)),
    )
)

Lookup = Callable[[uuid.UUID], Awaitable[Any]]


def via_sqlalchemy(engine: AsyncEngine) -> Lookup:
    async def lookup(subject: uuid.UUID) -> Any:
        async with autocommit(engine) as connection:
            parameters = {"subjects": [subject], "properties": ["itsailor"]}
            return (await connection.execute(VIA_SQLALCHEMY, parameters)).first()

    return lookup


async def timed(lookup: Lookup, subjects: list[uuid.UUID]) -> tuple[float, float, float, int]:
    """µs per look-up (wall, this process's CPU, PostgreSQL's CPU), and how many found one."""
    wall, cpu, db_cpu = time.perf_counter(), time.process_time(), database_cpu_seconds()
    found = 0
    for subject in subjects:
        found += await lookup(subject) is not None
    count = len(subjects)
    return (
        (time.perf_counter() - wall) / count * 1e6,
        (time.process_time() - cpu) / count * 1e6,
        (database_cpu_seconds() - db_cpu) / count * 1e6,
        found,
    )


async def rounds(db_url: str, count: int, number: int) -> dict[str, list[tuple[float, ...]]]:
    engine = create_engine(db_url, pool_size=4)
    reader = LatestDecisions(engine)
    reader.start()
    subjects = [uuid.UUID(subject_id(i)) for i in range(count)]
    ways: dict[str, Lookup] = {
        "reader": lambda subject: reader.latest("itsailor", subject),
        "via SQLAlchemy": via_sqlalchemy(engine),
    }
    try:
        for lookup in ways.values():  # warm: the pool's connections, their plans and caches
            await timed(lookup, subjects[:200])
        results: dict[str, list[tuple[float, ...]]] = {name: [] for name in ways}
        for _ in range(number):
            for name, lookup in ways.items():
                *costs, found = await timed(lookup, subjects)
                if not found:
                    raise SystemExit("no look-up found a decision: the fill made none for these")
                results[name].append(tuple(costs))
        return results
    finally:
        await reader.close()
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="PostgreSQL server to use (default: embedded)")
    parser.add_argument("--rows", default="100K", help="events in the table (default 100K)")
    parser.add_argument("--lookups", type=int, default=2000, help="look-ups per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with database(args.database_url, keep=False) as db_url:
        env = service_env(db_url)
        cli(env, "migrate")
        cli(env, "schema", "publish", "examples/schemas/itsailor.yaml")
        rows, _, seconds = asyncio.run(fill(db_url, parse_size(args.rows)))
        print(f"{rows:,} events ({seconds:.0f} s to load); {args.lookups} look-ups a round")
        print("µs per look-up      round   wall   worker CPU   PostgreSQL CPU")
        results = uvloop.run(rounds(db_url, args.lookups, args.rounds))
        for name, costs in results.items():
            for number, (wall, cpu, db_cpu) in enumerate(costs, 1):
                print(f"{name:<18} {number:>6} {wall:>6.0f} {cpu:>12.0f} {db_cpu:>16.0f}")
            medians = [statistics.median(column) for column in zip(*costs, strict=True)]
            print("{:<18} median {:>6.0f} {:>12.0f} {:>16.0f}".format(name, *medians))


if __name__ == "__main__":
    main()

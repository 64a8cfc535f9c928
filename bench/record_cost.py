"""What one group commit's statement costs PostgreSQL, per event: `consent_record_events` as it is,
against the function as migration 0024 made it, interleaved in one connection.

    uv run python bench/record_cost.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

The events are made by the service's own hot path (`parse_body`, `new_event`: hashes, salt,
identity and leaf) from bodies like bench/ingest.lua's, stamped when their batch is sent, and
stored in batches of `--batch` (30: one worker's group commits in `bench/run.py`; 13: two
workers'). Each round stores `--batches` batches through each function, each batch
serialised as its function reads it (0024's: one object per row; now: one array per row,
migration 0027), the statement's own commit included. Printed per event: the PostgreSQL backend's
CPU (user + system, from /proc, so the server must run on this machine) and this process's CPU
to serialise the batch (what the writer spends on it). 0024's function lives in `pg_temp` for the
run, so the table, its indexes and the data are the same for both.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import orjson
import psutil
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import KEY, cli, database, service_env  # noqa: E402
from service.banner.bodies import ConsentEventIn  # noqa: E402
from service.banner.service import new_event  # noqa: E402
from service.consent_schema.service import PublishedVersion  # noqa: E402
from service.core.hashing import Hasher  # noqa: E402
from service.core.json_input import parse_body  # noqa: E402
from service.ledger.event import NewEvent  # noqa: E402
from service.ledger.writer import _bytea, batch_json  # noqa: E402

MIGRATION_0027 = ROOT / "alembic" / "versions" / "2026_12_01_0027_positional_batch.py"
AGENT = (
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/131.0.0.0 Safari/537.36"
)
TYPES = ("accept-all", "accept-all", "reject-all", "save-selection", "save-selection", "withdraw")


def _function_0024() -> str:
    """0024's `consent_record_events`, as `pg_temp.record_0024` (from 0027's downgrade)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("positional_batch_0027", MIGRATION_0027)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = str(module.record_events_0024())
    head = "CREATE OR REPLACE FUNCTION consent_record_events("
    assert text.count(head) == 1
    return text.replace(head, "CREATE FUNCTION pg_temp.record_0024(")


def _objects(batch: list[NewEvent]) -> str:
    """A batch as 0024's function reads it: one JSON object per row."""
    return orjson.dumps(batch, default=_bytea).decode()


def _body(number: int) -> bytes:
    event_type = random.choice(TYPES)
    categories = ""
    if event_type == "save-selection":
        choices = ",".join(
            f'"{name}":{random.choice(["true", "false"])}'
            for name in ("functional", "analytics", "marketing")
        )
        categories = f',"categories":{{{choices}}}'
    user = f',"user_id":"acct-{number}"' if random.random() < 0.2 else ""
    return (
        f'{{"event_id":"{uuid.uuid4()}","subject_id":"{uuid.uuid4()}","event_type":"{event_type}",'
        f'"schema_version":1{categories}{user},'
        f'"page_url":"https://itsailor.io/pricing?utm_source=news&ref={number}"}}'
    ).encode()


class Events:
    """Fresh events of the service's own making, for one property's version 1."""

    def __init__(self, version: PublishedVersion) -> None:
        self.version = version
        self.hasher = Hasher.from_secrets(SecretStr(KEY), [])
        self.bodies = [parse_body(ConsentEventIn, _body(n)) for n in range(2000)]

    def batch(self, size: int) -> list[NewEvent]:
        now = datetime.now(UTC)
        events = []
        for _ in range(size):
            body = random.choice(self.bodies).model_copy(update={"event_id": uuid.uuid4()})
            events.append(
                new_event(
                    body,
                    property_name="itsailor",
                    version=self.version,
                    headers={b"user-agent": AGENT},
                    address=f"203.0.{random.randrange(256)}.{random.randrange(1, 255)}",
                    hasher=self.hasher,
                    now=now,
                )
            )
        return events


async def rounds(db_url: str, args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    connection = await asyncpg.connect(db_url)
    try:
        row = await connection.fetchrow(
            "SELECT * FROM consent_schema_versions WHERE property = 'itsailor' AND version = 1"
        )
        content = (
            orjson.loads(row["content"]) if isinstance(row["content"], str) else row["content"]
        )
        version = PublishedVersion.from_row(SimpleNamespace(**{**dict(row), "content": content}))
        events = Events(version)
        await connection.execute(_function_0024())
        backend = psutil.Process(await connection.fetchval("SELECT pg_backend_pid()"))
        ways: dict[str, tuple[Any, Any]] = {
            "0024 (row objects)": (
                await connection.prepare(
                    "SELECT count(*) FROM pg_temp.record_0024($1::jsonb, $2::text, $3::bytea)"
                ),
                _objects,
            ),
            "now (row arrays)": (
                await connection.prepare(
                    "SELECT count(*) FROM consent_record_events($1::jsonb, $2::text, $3::bytea)"
                ),
                batch_json,
            ),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
        for number in range(args.rounds + 1):  # round 0 warms up and is not counted
            for name, (statement, serialise) in ways.items():
                batches = [events.batch(args.batch) for _ in range(args.batches)]
                started = time.process_time()
                documents = [serialise(batch) for batch in batches]
                serialising = time.process_time() - started
                before = sum(backend.cpu_times()[:2])
                for document in documents:
                    if await statement.fetchval(document, None, None) != args.batch:
                        raise SystemExit(f"{name}: a batch was not stored whole")
                database = sum(backend.cpu_times()[:2]) - before
                if number:
                    per_event = 1e6 / (args.batches * args.batch)
                    results[name].append((database * per_event, serialising * per_event))
        return results
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="PostgreSQL server to use (default: embedded)")
    parser.add_argument("--batch", type=int, default=30, help="events a batch (default 30)")
    parser.add_argument("--batches", type=int, default=500, help="batches a round per function")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with database(args.database_url, keep=False) as db_url:
        env = service_env(db_url)
        cli(env, "migrate")
        cli(env, "schema", "publish", "examples/schemas/itsailor.yaml")
        results = asyncio.run(rounds(db_url, args))
    print(f"µs per event, batches of {args.batch}, {args.batches} batches a round")
    print(f"{'function':<20} {'round':>6} {'PostgreSQL CPU':>15} {'serialising':>12}")
    for name, costs in results.items():
        for number, (database_cpu, serialising) in enumerate(costs, 1):
            print(f"{name:<20} {number:>6} {database_cpu:>15.1f} {serialising:>12.2f}")
        medians = [statistics.median(column) for column in zip(*costs, strict=True)]
        print("{:<20} {:>6} {:>15.1f} {:>12.2f}".format(name, "median", *medians))


if __name__ == "__main__":
    main()

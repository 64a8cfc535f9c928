"""Read latencies on a large event table: state look-up, DSR history, erasure, schema GET, and
ingest again, at each requested table size (e.g. 1M, 10M rows, filled server-side)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import statistics
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from bench.run import (
    BENCH,
    EVENTS_PATH,
    cli,
    control_command,
    free_port,
    running,
    serve_command,
    service_env,
    wrk,
)

EVENTS_PER_SUBJECT = 5
# Generated row i belongs to subject i % SUBJECTS, so a subject's events are SUBJECTS rows (and
# SUBJECTS * SECONDS_APART seconds, about 162 days) apart, as a returning visitor's are, not
# side by side. Fixed, so the subjects of a 1M fill are those of the 10M fill it grows into: at
# 10M every subject has EVENTS_PER_SUBJECT events, below 2M rows the first `rows` have one each.
SUBJECTS = 2_000_000
# Row i is recorded i * SECONDS_APART seconds back from now: 10M rows cover about 27 months, so
# the partitioned table (migration 0014) holds them in about 27 monthly partitions.
SECONDS_APART = 7
# How far back the monthly partitions are made before a fill (the owner's function, 0014).
PARTITION_MONTHS = 30
LOAD_CHUNK = 1_000_000
# Erasures timed at each size, one after another (each of another subject): 300 so that a p50
# moves by less than the differences it is read for (a few tenths of a ms).
ERASURES = 300

# The generated rows. $1, $2: the first and last row number; $3: SUBJECTS; $4: SECONDS_APART.
_ROWS = """
SELECT i, gen_random_uuid() AS event_id, md5('subject-' || (i % $3))::uuid AS subject_id,
    now() - make_interval(secs => i * $4) AS recorded_at
FROM generate_series($1::bigint, $2::bigint) AS i
"""

# The three hashes as 64 hex characters (each schema stores them its own way: `_insert`).
_HASHES = {
    "IP_HASH": "md5('ip-' || (i % 3000000)) || md5('ip2-' || (i % 3000000))",
    "USER_HASH": "md5('user-' || (i / 10)) || md5('user2-' || (i / 10))",
    "REQUEST_HASH": "md5(i::text) || md5(i::text)",
}

_INSERT = """
INSERT INTO consent_events (event_id, property, subject_id, event_type, schema_version, choices,
    effective, gpc, dnt, signals_applied, ip_hash, user_hash, hash_key_id, user_agent, page_url,
    request_hash, recorded_at, salt, identity, leaf)
SELECT event_id, 'itsailor', subject_id,
    (ARRAY['accept-all', 'reject-all', 'save-selection', 'withdraw', 're-prompt'])[1 + i % 5], 1,
    '{"necessary": true, "functional": false, "analytics": true, "marketing": false}',
    '{"necessary": true, "functional": false, "analytics": true, "marketing": false}',
    i % 10 = 0, false, '[]', IP_HASH, CASE WHEN i % 5 = 0 THEN USER_HASH END,
    'bench', 'Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0',
    'https://itsailor.io/pricing', REQUEST_HASH, recorded_at,
    -- Stand-ins of the right size for the ledger's columns (the database requires them): these
    -- rows' leaves are not the hashes of their records, so `ledger verify` would name them.
    substring(sha256(('salt-' || i)::bytea) FROM 1 FOR 16), sha256(('identity-' || i)::bytea),
    sha256(('leaf-' || i)::bytea)
FROM rows
"""


def _insert(digest: str) -> str:
    """The INSERT with each hash as `digest` makes it of its hex text."""
    insert = _INSERT
    for name, hex_text in _HASHES.items():
        insert = insert.replace(name, digest.format(hex_text))
    return insert


# Before migration 0014: one table, hashes as 64 hex characters, event_id unique in it.
LOAD_SQL_TEXT_HASHES = f"WITH rows AS ({_ROWS}){_insert('{}')}"
# Since 0014: the table partitioned by month, hashes as their 32 bytes, and each event's id and
# time in consent_event_ids too, as the writer stores them.
LOAD_SQL = (
    f"WITH rows AS MATERIALIZED ({_ROWS}),"
    " ids AS (INSERT INTO consent_event_ids (event_id, recorded_at)"
    " SELECT event_id, recorded_at FROM rows)"
) + _insert("decode({}, 'hex')")


def parse_size(text: str) -> int:
    text = text.strip().upper()
    factor = {"K": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("KM")) * factor)


def subject_id(number: int) -> str:
    return str(uuid.UUID(hashlib.md5(f"subject-{number}".encode()).hexdigest()))


async def fill(db_url: str, target: int) -> tuple[int, int, float]:
    """Add generated events until the table holds `target` rows (server-side, in 1M chunks), as
    the database's schema stores them (before or since migration 0014's partitions). Returns the
    rows in the table, how many of them were generated, and the seconds it took."""
    connection = await asyncpg.connect(db_url, command_timeout=3600)
    try:
        partitioned = await connection.fetchval(
            "SELECT to_regclass('consent_event_ids') IS NOT NULL"
        )
        have = await connection.fetchval("SELECT count(*) FROM consent_events")
        generated = await connection.fetchval(
            "SELECT count(*) FROM consent_events WHERE hash_key_id = 'bench'"
        )
        start = time.perf_counter()
        if partitioned:
            # As the owner (the bench's connection): every month the rows span gets its partition.
            made = await connection.fetchval(
                "SELECT consent_events_add_months(now() - make_interval(months => $1), now())",
                PARTITION_MONTHS,
            )
            print(f"  made {made} monthly partitions", flush=True)
        load = LOAD_SQL if partitioned else LOAD_SQL_TEXT_HASHES
        while have < target:
            chunk = min(LOAD_CHUNK, target - have)
            await connection.execute(
                load, generated, generated + chunk - 1, SUBJECTS, SECONDS_APART
            )
            generated += chunk
            have += chunk
            print(f"  loaded {have:,} rows ({time.perf_counter() - start:.0f} s)", flush=True)
        await connection.execute("VACUUM ANALYZE consent_events")
        if partitioned:
            await connection.execute("VACUUM ANALYZE consent_event_ids")
            await check_partitions(connection, have)
        return have, generated, time.perf_counter() - start
    finally:
        await connection.close()


async def check_partitions(connection: asyncpg.Connection, rows: int) -> None:
    """The loaded rows are in the monthly partitions, none in the default one, one id each."""
    outside = await connection.fetchval("SELECT count(*) FROM consent_events_default")
    ids = await connection.fetchval("SELECT count(*) FROM consent_event_ids")
    partitions = [
        r[0]
        for r in await connection.fetch(
            "SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'consent_events'::regclass ORDER BY 1"
        )
    ]
    holding = 0
    for name in partitions:
        holding += await connection.fetchval(f"SELECT EXISTS (SELECT FROM {name})")
    print(
        f"  {holding} of {len(partitions)} partitions hold rows; the default one {outside:,};"
        f" {ids:,} event ids for {rows:,} events",
        flush=True,
    )
    if outside:
        raise RuntimeError(f"{outside:,} generated rows landed in consent_events_default")


def erasure_times(base: str, key: str, subjects: list[str]) -> list[float]:
    times = []
    for subject in subjects:
        request = urllib.request.Request(
            base + "/v1/dsr/erasures",
            data=json.dumps({"subject_id": subject}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=10) as answer:
            json.loads(answer.read())
        times.append((time.perf_counter() - started) * 1000)
    return times


async def caught_up(db_url: str, limit: float = 600.0) -> float:
    """Wait until the service's background job has sealed the ledger and rolled up the statistics
    over every loaded row (docs/stats.md, docs/evidence.md): measured otherwise, the reads would
    share the worker with that catching up. Returns the seconds it took."""
    connection = await asyncpg.connect(db_url)
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < limit:
            behind = await connection.fetchval(
                "SELECT (SELECT coalesce(max(seq), 0) FROM consent_events)"
                " > least((SELECT rolled FROM consent_stats_rollup),"
                " (SELECT max(last_seq) FROM ledger_seals))"
            )
            if not behind:
                break
            await asyncio.sleep(1)
        return time.perf_counter() - start
    finally:
        await connection.close()


def read_latencies(
    args: argparse.Namespace, wrk_bin: str, db_url: str, log_dir: Path
) -> list[dict[str, Any]]:
    env = service_env(db_url)
    key = json.loads(
        cli(env, "keys", "create", "--name", "bench", "--scopes", "dsr:read,dsr:erase", "--json")
    )["secret"]
    results = []
    for size_text in args.sizes.split(","):
        size = parse_size(size_text)
        print(f"\nfilling the event table to {size:,} rows ...", flush=True)
        rows, generated, seconds = asyncio.run(fill(db_url, size))
        # Row i is subject i % SUBJECTS's: those below min(generated, SUBJECTS) have events.
        population = min(generated, SUBJECTS)
        picks = random.sample(range(population), k=min(2000, population))
        result: dict[str, Any] = {"rows": rows, "load_seconds": round(seconds, 1)}
        with tempfile.TemporaryDirectory() as folder:
            subjects_file = Path(folder) / "subjects.txt"
            subjects_file.write_text("\n".join(subject_id(n) for n in picks[ERASURES:]) + "\n")
            port = free_port()
            serve = serve_command(port, 1)
            with running(serve, env, port, "/readyz", log_dir / f"reads-{rows}.log") as server:
                waited = asyncio.run(caught_up(db_url))
                print(f"  the service sealed and rolled up the loaded rows in {waited:.0f} s")
                result["catch_up_seconds"] = round(waited, 1)
                common = {"BENCH_SUBJECTS": str(subjects_file), "BENCH_KEY": key}
                for connections in (int(c) for c in args.read_connections.split(",")):
                    for name, mode in (("state", "state"), ("dsr_history", "history")):
                        options: dict[str, Any] = {
                            "script": BENCH / "lookup.lua",
                            "connections": connections,
                            "duration": args.read_duration,
                            "threads": 1,
                            "env_extra": {**common, "BENCH_MODE": mode},
                        }
                        wrk(wrk_bin, server.base, **{**options, "duration": 2})  # warm-up
                        result[f"{name}_c{connections}"] = wrk(wrk_bin, server.base, **options)
                times = erasure_times(server.base, key, [subject_id(n) for n in picks[:ERASURES]])
                result["erasure_ms"] = {
                    "p50": round(statistics.median(times), 2),
                    "p95": round(sorted(times)[int(len(times) * 0.95) - 1], 2),
                    "max": round(max(times), 2),
                }
                with urllib.request.urlopen(
                    server.base + "/v1/properties/itsailor/schema"
                ) as answer:
                    etag = answer.headers["ETag"]
                for name, tag in (("schema_get", ""), ("schema_get_etag", etag)):
                    result[name] = wrk(
                        wrk_bin,
                        server.base,
                        script=BENCH / "schema.lua",
                        connections=args.connections,
                        duration=args.read_duration,
                        threads=2,
                        env_extra={"BENCH_ETAG": tag},
                    )
                result["ingest"] = wrk(
                    wrk_bin,
                    server.base + EVENTS_PATH,
                    script=BENCH / "ingest.lua",
                    connections=args.connections,
                    duration=args.duration,
                    threads=2,
                    env_extra={},
                )
                result["rss_mb"] = server.rss_mb()
        print_reads(result)
        results.append(result)
    port = free_port()
    control = control_command(port, 1)
    with running(control, env, port, "/docs", log_dir / "control-schema.log") as server:
        control_schema = wrk(
            wrk_bin,
            server.base,
            script=BENCH / "schema.lua",
            connections=args.connections,
            duration=args.read_duration,
            threads=2,
            env_extra={"BENCH_ETAG": ""},
        )
    print(
        f"\nschema GET control (same body, bare FastAPI): {control_schema['rps']} req/s, p99 {control_schema['p99_ms']} ms"
    )
    for result in results:
        result["schema_get_control"] = control_schema
        result["schema_ratio_to_control"] = round(
            result["schema_get"]["rps"] / control_schema["rps"], 3
        )
        print(
            f"  {result['rows']:,} rows: schema GET ratio to control {result['schema_ratio_to_control']}"
        )
    return results


def print_reads(r: dict[str, Any]) -> None:
    print(f"\nreads with {r['rows']:,} events stored (1 worker; loaded in {r['load_seconds']} s)")
    print(f"  {'':18} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}")
    names = [k for k in r if k.startswith(("state_", "dsr_history_"))]
    for name in [*names, "schema_get", "schema_get_etag", "ingest"]:
        x = r[name]
        print(
            f"  {name:18} {x['rps']:>9} {x['p50_ms']:>8} {x['p95_ms']:>8} {x['p99_ms']:>8} {x['errors']:>7}"
        )
    e = r["erasure_ms"]
    print(
        f"  erasure of one subject (5 events), {ERASURES} in a row: p50 {e['p50']} ms, p95 {e['p95']} ms, max {e['max']} ms"
    )
    print(f"  peak RSS per worker: {r['rss_mb']} MB")

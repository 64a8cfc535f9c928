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
LOAD_CHUNK = 1_000_000

LOAD_SQL = """
INSERT INTO consent_events (event_id, property, subject_id, event_type, schema_version, choices,
    effective, gpc, dnt, signals_applied, ip_hash, user_hash, hash_key_id, user_agent, page_url,
    request_hash, recorded_at, salt, identity, leaf)
SELECT gen_random_uuid(), 'itsailor', md5('subject-' || (i / $3))::uuid,
    (ARRAY['accept-all', 'reject-all', 'save-selection', 'withdraw', 're-prompt'])[1 + i % 5], 1,
    '{"necessary": true, "functional": false, "analytics": true, "marketing": false}',
    '{"necessary": true, "functional": false, "analytics": true, "marketing": false}',
    i % 10 = 0, false, '[]', md5('ip-' || (i % 3000000)) || md5('ip2-' || (i % 3000000)),
    CASE WHEN i % 5 = 0 THEN md5('user-' || (i / 10)) || md5('user2-' || (i / 10)) END,
    'bench', 'Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0',
    'https://itsailor.io/pricing', md5(i::text) || md5(i::text),
    now() - make_interval(secs => i),
    -- Stand-ins of the right size for the ledger's columns (the database requires them): these
    -- rows' leaves are not the hashes of their records, so `ledger verify` would name them.
    substring(sha256(('salt-' || i)::bytea) FROM 1 FOR 16), sha256(('identity-' || i)::bytea),
    sha256(('leaf-' || i)::bytea)
FROM generate_series($1::bigint, $2::bigint) AS i
"""


def parse_size(text: str) -> int:
    text = text.strip().upper()
    factor = {"K": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("KM")) * factor)


def subject_id(number: int) -> str:
    return str(uuid.UUID(hashlib.md5(f"subject-{number}".encode()).hexdigest()))


async def fill(db_url: str, target: int) -> tuple[int, int, float]:
    """Add generated events until the table holds `target` rows (server-side, in 1M chunks).
    Returns the rows in the table, how many of them were generated, and the seconds it took."""
    connection = await asyncpg.connect(db_url, command_timeout=3600)
    try:
        have = await connection.fetchval("SELECT count(*) FROM consent_events")
        generated = await connection.fetchval(
            "SELECT count(*) FROM consent_events WHERE hash_key_id = 'bench'"
        )
        start = time.perf_counter()
        while have < target:
            chunk = min(LOAD_CHUNK, target - have)
            await connection.execute(LOAD_SQL, generated, generated + chunk - 1, EVENTS_PER_SUBJECT)
            generated += chunk
            have += chunk
            print(f"  loaded {have:,} rows ({time.perf_counter() - start:.0f} s)", flush=True)
        await connection.execute("VACUUM ANALYZE consent_events")
        return have, generated, time.perf_counter() - start
    finally:
        await connection.close()


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
        population = generated // EVENTS_PER_SUBJECT
        picks = random.sample(range(population), k=min(2000, population))
        result: dict[str, Any] = {"rows": rows, "load_seconds": round(seconds, 1)}
        with tempfile.TemporaryDirectory() as folder:
            subjects_file = Path(folder) / "subjects.txt"
            subjects_file.write_text("\n".join(subject_id(n) for n in picks[100:]) + "\n")
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
                times = erasure_times(server.base, key, [subject_id(n) for n in picks[:100]])
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
        f"  erasure of one subject (5 events), sequential: p50 {e['p50']} ms, p95 {e['p95']} ms, max {e['max']} ms"
    )
    print(f"  peak RSS per worker: {r['rss_mb']} MB")

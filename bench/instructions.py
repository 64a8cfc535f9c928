"""Instructions per request, counted by callgrind: the service's one worker against the control's,
the same load, in numbers that do not move with the machine's speed.

    uv run python bench/instructions.py --database-url postgresql://…   # ingest.lua, 3 rounds
    uv run python bench/instructions.py --script ingest_fetch.lua --control declared
    uv run python bench/instructions.py --floors    # also the two floors of bench/floors.py

`bench/run.py` measures time: requests a second and CPU µs per request, which on a shared machine
swing by a fifth between runs minutes apart (docs/architecture.md, "Three cuts, smaller than this
machine's spread"), more than most changes to the hot path. Here each server runs under
`valgrind --tool=callgrind` with counting off; once it is ready and warmed up, counting is
switched on, wrk sends the load for `--seconds`, counting is switched off and the count is
dumped: instructions executed by the whole worker process (HTTP server, app, the writer and its
driver) divided by the requests answered. With `--floors`, the same load is counted first on the
two floors of `bench/floors.py` (httptools on uvloop answering by itself; a bare ASGI callable on
uvicorn), and the output splits each count into what each layer adds. The control's rounds agree within about 1 %, the
service's within about 4 % (the size of its group commits varies from round to round).

What it leaves out, and how it differs from the bench: PostgreSQL's instructions (its own
processes; `bench/run.py` gives its CPU per event); and under callgrind a worker is about forty
times slower, so its group commits are smaller than at full speed and each event carries a larger
share of one (the events per commit are printed). One worker only. It needs valgrind (Debian
package `valgrind`, installed with apt-get when missing and running as root) and wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import (
    BENCH,
    EVENTS_PATH,
    INGEST_SCRIPTS,
    RESULTS,
    cli,
    control_command,
    database,
    ensure_tool,
    ensure_wrk,
    free_port,
    group_commits,
    running,
    serve_command,
    service_env,
    stored_ids,
    wrk,
)

READY_WITHIN = 600  # seconds: imports under valgrind take a minute or two


def callgrind(command: list[str], out: Path) -> list[str]:
    """`command` under callgrind, counting nothing until told to (`callgrind_control`)."""
    valgrind = ensure_tool("valgrind", "macOS: not available")
    return [valgrind, "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
            *command]  # fmt: skip


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def one_round(pid: int, out: Path, number: int, load: dict[str, Any]) -> dict[str, Any]:
    """Count the worker's instructions while wrk sends `load`; per request."""
    control(pid, "--zero")
    control(pid, "--instr=on")
    run = wrk(**load)
    control(pid, "--instr=off")
    control(pid, f"--dump=round-{number}")
    dump = Path(f"{out}.{number}")
    deadline = time.monotonic() + 120
    while not dump.exists() or "totals:" not in dump.read_text():
        if time.monotonic() > deadline:
            raise RuntimeError(f"callgrind wrote no dump {dump}")
        time.sleep(0.5)
    totals = next(line for line in dump.read_text().splitlines() if line.startswith("totals:"))
    instructions = int(totals.split()[1])
    return {
        "requests": run["requests"],
        "errors": run["errors"],
        "instructions": instructions,
        "per_request": round(instructions / run["requests"]),
    }


def measure(
    args: argparse.Namespace,
    command: Callable[[int], list[str]],
    env: dict[str, str],
    ready_path: str,
    name: str,
) -> list[dict[str, Any]]:
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix=f"consent-callgrind-{name}-"))
    out = folder / "callgrind.out"
    load: dict[str, Any] = {
        "binary": ensure_wrk(), "url": f"http://127.0.0.1:{port}{EVENTS_PATH}",
        "script": BENCH / args.script, "connections": args.connections, "threads": 1,
        "env_extra": {},
    }  # fmt: skip
    print(f"{name}: starting under callgrind (logs and counts in {folder})", flush=True)
    under = callgrind(command(port), out)
    log = folder / "server.log"
    with running(
        under, env, port, ready_path, log, ready_within=READY_WITHIN, stop_within=120
    ) as server:
        pid = server.process.pid
        wrk(**load, duration=5)  # warm-up, not counted
        rounds = []
        for number in range(1, args.rounds + 1):
            rounds.append(one_round(pid, out, number, {**load, "duration": args.seconds}))
            print(f"  round {number}: {rounds[-1]}", flush=True)
    return rounds


def floor_command(port: int, floor: str) -> list[str]:
    """A floor of bench/floors.py; the ASGI one with the control's server flags."""
    if floor == "protocol":
        return [sys.executable, "-m", "bench.floors", "--port", str(port)]
    return [*control_command(port, 1)[:3], "bench.floors:app", *control_command(port, 1)[4:]]


# With --floors: what each count adds over the layer under it (None: counted from nothing).
LAYERS = {
    "protocol": (None, "HTTP/1.1 on httptools and uvloop, no framework"),
    "asgi": ("protocol", "uvicorn's ASGI cycle (scope, cycle, task, response head)"),
    "control": ("asgi", "FastAPI, Starlette and the request model, over uvicorn"),
    "service": ("asgi", "its hot stack, validation, evidence and group commit, over uvicorn"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL server to use (default: embedded)")
    parser.add_argument("--script", choices=INGEST_SCRIPTS, default="ingest.lua")
    parser.add_argument("--control", choices=("request", "declared"), default="request")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=15, help="per counted round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--floors", action="store_true", help="also count bench/floors.py's two")
    args = parser.parse_args()
    if args.control == "declared" and args.script != "ingest_fetch.lua":
        parser.error("--control declared takes JSON bodies only: use --script ingest_fetch.lua")

    report: dict[str, Any] = {"args": vars(args)}
    with database(args.database_url, keep=False) as db_url:
        env = service_env(db_url)
        cli(env, "migrate")
        cli(env, "schema", "publish", "examples/schemas/itsailor.yaml")
        for floor in ("protocol", "asgi") if args.floors else ():
            command = functools.partial(floor_command, floor=floor)
            report[floor] = measure(args, command, env, "/", floor)
        report["control"] = measure(
            args, lambda port: control_command(port, 1, args.control), env, "/docs", "control"
        )
        commits = asyncio.run(group_commits(db_url))
        report["service"] = measure(
            args, lambda port: serve_command(port, 1), env, "/readyz", "service"
        )
        stored = len(asyncio.run(stored_ids(db_url)))
        commits = asyncio.run(group_commits(db_url)) - commits
        report["events_per_commit"] = round(stored / commits, 1) if commits else None

    control_per = statistics.mean(r["per_request"] for r in report["control"])
    service_per = statistics.mean(r["per_request"] for r in report["service"])
    report["ratio"] = round(service_per / control_per, 3)
    print(f"\ninstructions per request, one worker, {args.script}, control: {args.control}")
    names = [name for name in LAYERS if name in report]
    for name in names:
        per = [f"{r['per_request'] / 1000:,.0f}k" for r in report[name]]
        errors = sum(r["errors"] for r in report[name])
        print(f"  {name:8} {', '.join(per)}   errors {errors}")
    if args.floors:
        print("\nwhat each layer adds (means of the rounds):")
        means = {name: statistics.mean(r["per_request"] for r in report[name]) for name in names}
        for name in names:
            under, what = LAYERS[name]
            added = means[name] - (means[under] if under else 0.0)
            print(f"  {name:8} {added / 1000:>+8,.0f}k   {what}")
    print(f"  service / control: {report['ratio']}  (events per group commit: "
          f"{report['events_per_commit']}; PostgreSQL's instructions not counted)")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"instructions-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()

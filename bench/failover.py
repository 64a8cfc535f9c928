"""Failover drill: a synchronous standby takes over and no acknowledged event is lost.

    uv run python bench/failover.py                 # about a minute and a half
    uv run python bench/failover.py --clients 32 --json

It starts a PostgreSQL primary and a synchronous standby (bench/cluster.py: `synchronous_commit =
on`, `synchronous_standby_names = 'FIRST 1 (standby1)'`, or `ANY 1` with --sync any), migrates,
publishes the itsailor schema and runs one `consent-service serve` (production mode) on libpq's
host list, primary first: `...@primary,standby/consent?target_session_attrs=read-write`. Then:

1. throughput and latency of the same load (--clients, and one client alone) with commits
   confirmed by the standby, then with `synchronous_standby_names = ''` (local commit; the
   standby still streams);
2. the only synchronous standby stopped: one event waits for it until CONSENT_DB_COMMAND_TIMEOUT
   (--command-timeout) and is answered 503, not acknowledged; once the standby is back, a retry
   of the same body answers 200;
3. failover: steady load, SIGKILL of the primary's postmaster and every child, a pause
   (--promote-delay), `pg_ctl promote` of the standby, load until events are acknowledged again
   and for --after-seconds more. The service is never restarted.

Every event has its own event_id. At the end every id answered 2xx must be on the promoted server.
Exit 1 if one is missing, if any 5xx other than 503 was answered, or if no event was acknowledged
within --recovery-timeout seconds of the kill.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster import Cluster, Server, free_port  # noqa: E402

EVENTS = "/v1/properties/itsailor/consent-events"
SCHEMA = ROOT / "examples" / "schemas" / "itsailor.yaml"
API_ROLE = "consent_app"  # a login member of consent_api, as production runs it
SYNC = {"first": "FIRST 1 (standby1)", "any": "ANY 1 (standby1)"}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Answer(NamedTuple):
    sent: float
    answered: float
    status: int | str  # an HTTP status, or the name of the client's error


@dataclass
class Load:
    """Clients that POST one event after another, each with an event_id of its own."""

    base: str
    answers: list[Answer] = field(default_factory=list)
    acknowledged: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)  # answered 503 outcome-unknown
    since: float = float("inf")  # keep the first 201 to a request sent after this
    first_201: Answer | None = None
    recovered: asyncio.Event = field(default_factory=asyncio.Event)
    _running: bool = False

    @contextlib.asynccontextmanager
    async def running(self, clients: int) -> AsyncIterator[None]:
        self._running = True
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(base_url=self.base, timeout=15, limits=limits) as client:
            tasks = [asyncio.create_task(self._client(client)) for _ in range(clients)]
            try:
                yield
            finally:
                self._running = False
                await asyncio.gather(*tasks)

    async def _client(self, client: httpx.AsyncClient) -> None:
        while self._running:
            if (await self.send(client, body())).status != 201:
                await asyncio.sleep(0.05)

    async def send(self, client: httpx.AsyncClient, event: dict[str, Any]) -> Answer:
        sent, content = time.monotonic(), b""
        try:
            response = await client.post(EVENTS, json=event)
            status: int | str = response.status_code
            content = response.content
        except httpx.HTTPError as error:
            status = type(error).__name__
        answer = Answer(sent, time.monotonic(), status)
        self.answers.append(answer)
        if status in (200, 201):
            self.acknowledged.add(event["event_id"])
        elif status == 503 and b"outcome-unknown" in content:
            self.unknown.add(event["event_id"])
        if status == 201 and sent > self.since and self.first_201 is None:
            self.first_201 = answer
            self.recovered.set()
        return answer

    async def measure(self, clients: int, seconds: float) -> dict[str, Any]:
        """Events acknowledged a second and their latency, after a second of warm-up."""
        async with self.running(clients):
            await asyncio.sleep(1)
            start, before = time.monotonic(), await self.batches()
            await asyncio.sleep(seconds)
            end, after = time.monotonic(), await self.batches()
        answers = [a for a in self.answers if a.sent >= start and a.answered <= end]
        ms = sorted((a.answered - a.sent) * 1000 for a in answers if a.status in (200, 201))
        cuts = statistics.quantiles(ms, n=100) if len(ms) > 1 else [0.0] * 99
        batches, batch_seconds, rows = (b - a for a, b in zip(before, after, strict=True))
        return {"clients": clients, "events_per_second": round(len(ms) / seconds, 1),
                "p50_ms": round(cuts[49], 2), "p99_ms": round(cuts[98], 2),
                "batch_commit_ms": round(batch_seconds / max(batches, 1) * 1000, 2),
                "events_per_batch": round(rows / max(batches, 1), 1),
                "statuses": count(answers)}  # fmt: skip

    async def batches(self) -> tuple[float, ...]:
        """The service's group commits so far (/metrics): batches, their seconds, their rows."""
        async with httpx.AsyncClient(base_url=self.base) as client:
            lines = (await client.get("/metrics")).text.splitlines()
        values = dict(
            line.split(" ", 1) for line in lines if line.startswith("consent_event_batch")
        )
        names = ("seconds_count", "seconds_sum", "rows_sum")
        return tuple(float(values.get(f"consent_event_batch_{name}", 0)) for name in names)


def body(event_id: str | None = None) -> dict[str, Any]:
    return {"event_id": event_id or str(uuid.uuid4()), "subject_id": str(uuid.uuid4()),
            "event_type": "accept-all", "schema_version": 1}  # fmt: skip


def count(answers: list[Answer]) -> dict[str, int]:
    return dict(sorted(Counter(str(a.status) for a in answers).items()))


class Service:
    """One `consent-service serve` (one worker) in a session of its own, its log in a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        with log.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port",
                 str(self.port)],
                env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    async def ready(self) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}") as client:
            for _ in range(300):
                if self.process.poll() is not None:
                    raise RuntimeError(f"the service exited: {self.log.read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise RuntimeError("the service was not ready in 60 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def service_env(database_url: str, command_timeout: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    return env | {
        "CONSENT_ENV": "production",
        "CONSENT_DATABASE_URL": database_url,
        "CONSENT_IP_HASH_SALT": secrets.token_urlsafe(32),
        "CONSENT_RECEIPT_KEY": secrets.token_urlsafe(32),
        "CONSENT_DB_COMMAND_TIMEOUT": str(command_timeout),
        "CONSENT_LOG_LEVEL": "WARNING",
        "CONSENT_METRICS_PUBLIC": "true",  # the group commits' timings, read from /metrics
    }


def cli(env: dict[str, str], *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "service", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"consent-service {' '.join(args)}: {done.stderr or done.stdout}")


async def stored_ids(server: Server) -> set[str]:
    connection = await asyncpg.connect(server.url("consent"))
    try:
        rows = await connection.fetch("SELECT event_id FROM consent_events")
    finally:
        await connection.close()
    return {str(row[0]) for row in rows}


async def standby_down(load: Load, primary: Server, standby: Server, wait: float) -> dict[str, Any]:
    """Stop the only synchronous standby, send one event, start the standby, send it again."""
    standby.stop("fast")
    event = body()
    async with httpx.AsyncClient(base_url=load.base, timeout=wait) as client:
        first = await load.send(client, event)
        visible = primary.sql(
            f"SELECT count(*) FROM consent_events WHERE event_id = '{event['event_id']}'", "consent"
        )
        waiting = primary.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
        standby.start()
        primary.wait_for_standby(standby.name)
        retry = await load.send(client, event)
    return {"status": first.status, "seconds": round(first.answered - first.sent, 2),
            "acknowledged": first.status in (200, 201), "visible_on_primary": visible == "1",
            "backends_waiting_for_standby": int(waiting), "retry_once_back": retry.status}  # fmt: skip


async def drill(args: argparse.Namespace, cluster: Cluster, report: dict[str, Any]) -> None:
    names = SYNC[args.sync]
    report.update(postgresql=cluster.version, clients=args.clients, synchronous=names)
    say(f"{cluster.version}: a primary and standby1, synchronous_standby_names = '{names}'")
    primary = cluster.primary(synchronous_standby_names=names, synchronous_commit="on")
    standby = cluster.standby(primary, "standby1")
    primary.wait_for_standby("standby1")
    primary.sql("CREATE DATABASE consent")
    owner = service_env(primary.url("consent"), args.command_timeout)
    cli(owner, "migrate")
    primary.sql(f"CREATE ROLE {API_ROLE} LOGIN; GRANT consent_api TO {API_ROLE}", "consent")
    cli(owner, "schema", "publish", str(SCHEMA))
    hosts = f"127.0.0.1:{primary.port},127.0.0.1:{standby.port}"
    report["database_url"] = (
        f"postgresql://{API_ROLE}@{hosts}/consent?target_session_attrs=read-write"
    )
    service = Service(
        service_env(report["database_url"], args.command_timeout), cluster.folder / "service.log"
    )
    try:
        await service.ready()
        await phases(args, Load(f"http://127.0.0.1:{service.port}"), primary, standby, report)
    finally:
        service.stop()
        if not report["passed"]:
            tail = service.log.read_text(errors="replace").splitlines()[-40:]
            say("the service's log, last lines:\n" + "\n".join(tail))


async def phases(
    args: argparse.Namespace, load: Load, primary: Server, standby: Server, report: dict[str, Any]
) -> None:
    seconds, names = args.measure_seconds, report["synchronous"]
    say(f"throughput, commits confirmed by standby1 ({seconds:.0f} s; one client 3 s)")
    sync = [await load.measure(args.clients, seconds), await load.measure(1, 3)]
    primary.configure(synchronous_standby_names="")
    primary.wait_for_standby("standby1", ("async",))
    say(f"throughput, local commit, standby1 asynchronous ({seconds:.0f} s; one client 3 s)")
    local = [await load.measure(args.clients, seconds), await load.measure(1, 3)]
    report["throughput"] = {"synchronous": sync, "local": local}
    primary.configure(synchronous_standby_names=names)
    primary.wait_for_standby("standby1")

    say("the only synchronous standby stopped: one event")
    report["standby_down"] = await standby_down(load, primary, standby, args.command_timeout + 7)

    say(f"failover: load, SIGKILL of the primary after {args.before_seconds:.0f} s")
    async with load.running(args.clients):
        await asyncio.sleep(args.before_seconds)
        killed = time.monotonic()
        await asyncio.to_thread(primary.kill)
        load.since = time.monotonic()  # only the new primary can answer what is sent from now
        await asyncio.sleep(args.promote_delay)
        promote = time.monotonic()
        report["promote_seconds"] = round(await asyncio.to_thread(standby.promote), 2)
        say(f"standby1 promoted in {report['promote_seconds']} s")
        with contextlib.suppress(TimeoutError):
            left = args.recovery_timeout - (time.monotonic() - killed)
            await asyncio.wait_for(load.recovered.wait(), max(left, 0))
        if load.first_201 is not None:
            await asyncio.sleep(args.after_seconds)
        ended = time.monotonic()

    stored = await stored_ids(standby)
    missing = sorted(load.acknowledged - stored)
    first = load.first_201
    switched = first.answered if first else ended
    switch = [a for a in load.answers if killed <= a.answered <= switched]
    statuses = count(load.answers)
    errors = [code for code in statuses if code.isdigit() and int(code) >= 500 and code != "503"]
    failures = [f"{len(missing)} acknowledged events missing"] if missing else []
    failures += [f"answered {', '.join(errors)}"] if errors else []
    if first is None or first.answered - killed > args.recovery_timeout:
        failures.append(f"no 201 within {args.recovery_timeout:g} s of the kill")
    report.update(
        acknowledged=len(load.acknowledged),
        acknowledged_on_promoted=len(load.acknowledged & stored),
        missing=len(missing),
        missing_ids=missing[:50],
        outcome_unknown=len(load.unknown),
        outcome_unknown_stored=len(load.unknown & stored),
        statuses_during_switch=count(switch),
        statuses=statuses,
        kill_to_first_201=round(first.answered - killed, 2) if first else None,
        promote_to_first_201=round(first.answered - promote, 2) if first else None,
        failures=failures,
        passed=not failures,
    )


def show(report: dict[str, Any]) -> None:
    lines = [f"{report['postgresql']}; {report['database_url']}"]
    for mode, label in (
        ("synchronous", "commit confirmed by the standby"),
        ("local", "local commit"),
    ):
        for run in report["throughput"][mode]:
            lines.append(
                f"{label}, {run['clients']} client(s): {run['events_per_second']} events/s, "
                f"p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms; a group commit "
                f"{run['batch_commit_ms']} ms for {run['events_per_batch']} events"
            )
    (sync, sync_one), (local, local_one) = report["throughput"].values()
    lines.append(
        f"synchronous commit costs {sync_one['batch_commit_ms'] - local_one['batch_commit_ms']:+.2f}"
        f" ms a group commit and {sync_one['p50_ms'] - local_one['p50_ms']:+.2f} ms of one "
        f"client's p50; {sync['clients']} clients: {sync['events_per_second']} against "
        f"{local['events_per_second']} events/s ({local['events_per_batch']} events a commit: "
        "where that is near 1, the load generator, not the commit, sets the pace)"
    )
    down = report["standby_down"]
    lines += [
        f"standby down: the event was answered {down['status']} after {down['seconds']} s "
        f"(acknowledged: {down['acknowledged']}; visible on the primary: "
        f"{down['visible_on_primary']}; backends waiting for the standby: "
        f"{down['backends_waiting_for_standby']}); the same body once the standby was back: "
        f"{down['retry_once_back']}",
        f"events acknowledged: {report['acknowledged']}",
        f"acknowledged events found on the promoted server: {report['acknowledged_on_promoted']}",
        f"missing: {report['missing']}" + "".join(f"\n  {i}" for i in report["missing_ids"]),
        f"503 outcome-unknown: {report['outcome_unknown']} (stored all the same: "
        f"{report['outcome_unknown_stored']})",
        f"status codes during the switch (kill to first 201): {report['statuses_during_switch']}",
        f"status codes, whole run: {report['statuses']}",
        f"promote took {report['promote_seconds']} s; kill to first 201: "
        f"{report['kill_to_first_201']} s; promote to first 201: {report['promote_to_first_201']} s",
        f"whole run: {report['seconds']} s",
        "PASSED" if report["passed"] else "FAILED: " + "; ".join(report["failures"]),
    ]
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--before-seconds", type=float, default=4, help="load before the kill")
    parser.add_argument("--after-seconds", type=float, default=4, help="load after recovery")
    parser.add_argument("--promote-delay", type=float, default=2, help="kill to promote")
    parser.add_argument("--measure-seconds", type=float, default=12, help="each throughput run")
    parser.add_argument("--recovery-timeout", type=float, default=60)
    parser.add_argument("--command-timeout", type=float, default=3,
                        help="CONSENT_DB_COMMAND_TIMEOUT of the service")  # fmt: skip
    parser.add_argument("--sync", choices=sorted(SYNC), default="first")
    parser.add_argument("--pg-bin", help="PostgreSQL's bin folder (default: the wheel's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    report: dict[str, Any] = {"passed": False}
    started = time.monotonic()
    with Cluster(args.pg_bin) as cluster:
        asyncio.run(drill(args, cluster, report))
    report["seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        show(report)
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()

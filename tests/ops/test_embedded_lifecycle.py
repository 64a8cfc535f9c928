"""The embedded PostgreSQL's lifecycle (docs/architecture.md, "The embedded PostgreSQL"): the
process that leaves it last stops it, whoever started it, so a killed `serve` or a server
restarted under one is never left running; a lock file of a server that is gone never stops the
next start. Each test runs a real embedded server in a data folder of its own module, with
`serve` played by a second process that holds the server through `database_url` as `serve` does
and a CLI command played by the test process itself."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest

from service.core.config import Environment, Settings
from service.core.embedded import EmbeddedPostgres, EmbeddedStartError, database_url

# `serve` as far as the server is concerned: it enters `database_url`, says the URL, and leaves
# when its stdin closes (or is killed).
USER = """
import sys
from pathlib import Path
from service.core.config import Environment, Settings
from service.core.embedded import database_url
with database_url(Settings(env=Environment.DEV, database_url=None, data_dir=Path(sys.argv[1]))) as url:
    print(url, flush=True)
    sys.stdin.read()
"""


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    # Not under pytest's own temporary folder: a pytest starting meanwhile makes it private
    # again, and the server's own user (when tests run as root) could no longer reach it.
    with tempfile.TemporaryDirectory(prefix="consent-embedded-") as name:
        folder = Path(name)
        EmbeddedPostgres(folder).stop()  # initdb once for the module
        yield folder
        EmbeddedPostgres(folder).stop()  # whatever a failed test left running, stopped
        assert server_pid(folder) is None


def settings(data_dir: Path) -> Settings:
    return Settings(env=Environment.DEV, database_url=None, data_dir=data_dir)


def answers(url: str) -> bool:
    async def select_one() -> object:
        connection = await asyncpg.connect(url, timeout=10)
        try:
            return await connection.fetchval("SELECT 1")
        finally:
            await connection.close()

    try:
        return asyncio.run(select_one()) == 1
    except (OSError, asyncpg.PostgresError):
        return False


def server_pid(data_dir: Path) -> int | None:
    """The running server's process id: the one in its lock file, if that process is alive (a
    zombie is not) and serves this data folder."""
    import psutil  # type: ignore[import-untyped]

    pgdata = data_dir / "postgres"
    try:
        pid = int((pgdata / "postmaster.pid").read_text().partition("\n")[0])
        process = psutil.Process(pid)
        if process.status() != psutil.STATUS_ZOMBIE and str(pgdata) in process.cmdline():
            return pid
    except (FileNotFoundError, ValueError, psutil.NoSuchProcess):
        pass
    return None


def wait_stopped(data_dir: Path) -> None:
    """The server is gone: pg_ctl returns once the lock file is, a moment before the process."""
    deadline = time.monotonic() + 30
    while server_pid(data_dir) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server_pid(data_dir) is None


@contextmanager
def started(data_dir: Path) -> Iterator[subprocess.Popen[str]]:
    """A second process using the server, like `serve` (killed at the end if still running)."""
    with subprocess.Popen(
        [sys.executable, "-c", USER, str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=60)


def url_of(process: subprocess.Popen[str]) -> str:
    """The URL the process says once it has the server."""
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    assert url.startswith("postgresql://"), url
    return url


@contextmanager
def user(data_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    with started(data_dir) as process:
        yield process, url_of(process)


def leave(process: subprocess.Popen[str]) -> None:
    """The user ends normally (Ctrl-C on `serve`): it leaves through `database_url`."""
    assert process.stdin is not None
    process.stdin.close()
    assert process.wait(timeout=60) == 0


def test_a_command_that_starts_the_server_alone_stops_it(data_dir: Path) -> None:
    assert server_pid(data_dir) is None
    with database_url(settings(data_dir)) as url:
        assert answers(url)
        assert server_pid(data_dir) is not None
    wait_stopped(data_dir)


def test_a_command_leaves_the_server_to_serve_and_stops_it_once_serve_is_killed(
    data_dir: Path,
) -> None:
    with user(data_dir) as (serve, serve_url):
        pid = server_pid(data_dir)
        assert pid is not None
        # While `serve` runs, a command uses its server and leaves it running.
        with database_url(settings(data_dir)) as url:
            assert answers(url)
        assert server_pid(data_dir) == pid
        assert answers(serve_url)
        # `serve` killed (SIGKILL: no `finally`, no atexit) leaves the server running...
        serve.kill()
        serve.wait(timeout=60)
        assert server_pid(data_dir) == pid
    # ... and the next command, its last user now, stops it when it ends.
    with database_url(settings(data_dir)) as url:
        assert answers(url)
        assert server_pid(data_dir) == pid
    wait_stopped(data_dir)


def test_a_server_a_command_restarts_under_serve_is_left_to_serve_which_stops_it(
    data_dir: Path,
) -> None:
    with user(data_dir) as (serve, serve_url):
        killed = server_pid(data_dir)
        assert killed is not None
        os.kill(killed, signal.SIGKILL)  # the embedded server dies under `serve`
        # Its lock files stay; its process lingers as a zombie until reaped.
        with database_url(settings(data_dir)) as url:
            restarted = server_pid(data_dir)
            assert restarted not in (None, killed)
            assert answers(url)
        # The command started it, but `serve` uses it (at the same socket): it keeps running.
        assert server_pid(data_dir) == restarted
        assert answers(serve_url)
        leave(serve)
    wait_stopped(data_dir)


def test_two_processes_starting_at_once_share_one_server_stopped_by_the_last(
    data_dir: Path,
) -> None:
    with started(data_dir) as first, started(data_dir) as second:
        [url] = {url_of(first), url_of(second)}
        pid = server_pid(data_dir)
        leave(first)
        assert server_pid(data_dir) == pid
        assert answers(url)
        leave(second)
    wait_stopped(data_dir)


def test_lock_files_naming_a_live_process_that_is_no_server_do_not_stop_the_start(
    data_dir: Path,
) -> None:
    """After a reboot or in a new container, the process id a killed server left in its lock
    files belongs to some other process: PostgreSQL takes it for a running server."""
    pgdata = data_dir / "postgres"
    with user(data_dir) as (serve, _):
        left = (pgdata / "postmaster.pid").read_text().splitlines(keepends=True)
        leave(serve)
    wait_stopped(data_dir)
    someone_else = f"{os.getpid()}\n"  # alive, and no PostgreSQL
    for lock in ("postmaster.pid", ".s.PGSQL.5432.lock"):
        (pgdata / lock).write_text("".join([someone_else, *left[1:]]))
    with database_url(settings(data_dir)) as url:
        assert answers(url)
    wait_stopped(data_dir)


def test_a_torn_pid_file_of_a_crash_does_not_stop_the_start(data_dir: Path) -> None:
    """PostgreSQL refuses to start on an empty postmaster.pid ("the remnant of a previous server
    startup crash") until someone removes it."""
    (data_dir / "postgres" / "postmaster.pid").write_text("")
    with database_url(settings(data_dir)) as url:
        assert answers(url)
    wait_stopped(data_dir)


def test_the_data_folder_holds_no_list_of_process_ids(data_dir: Path) -> None:
    """The wrapper wrote `.handle_pids.json` for a stopping rule not used here; none is written,
    and one an earlier version left is removed at the next start."""
    pid_list = data_dir / "postgres" / ".handle_pids.json"
    pid_list.write_text("[1]")
    with user(data_dir) as (serve, _), database_url(settings(data_dir)) as url:
        assert answers(url)
        assert not pid_list.exists()
        leave(serve)
    wait_stopped(data_dir)
    assert not pid_list.exists()


# Holds a shared memory segment, as a killed server's children do until they notice its death.
HOLDER = """
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
address = libc.shmat(int(sys.argv[1]), None, 0o10000)  # SHM_RDONLY
assert address not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
print("attached", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_start_while_a_killed_servers_memory_is_held_is_retried(
    data_dir: Path, captured_logs_factory: Callable[[], io.StringIO]
) -> None:
    """Right after a server is killed, its children still hold its shared memory for a moment,
    and PostgreSQL refuses to start beside them: the start is retried until it succeeds."""
    logs = captured_logs_factory()
    with user(data_dir) as (serve, _):
        killed = server_pid(data_dir)
        assert killed is not None
        # postmaster.pid line 7: the key and id of the server's System V segment.
        segment = (data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[6].split()
        os.kill(killed, signal.SIGKILL)
        with subprocess.Popen(
            [sys.executable, "-c", HOLDER, segment[1], "1.0"], stdout=subprocess.PIPE, text=True
        ) as holder:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "attached\n"
            with database_url(settings(data_dir)) as url:
                assert answers(url)
            assert holder.wait(timeout=60) == 0
        leave(serve)
    wait_stopped(data_dir)
    retries = [json.loads(line) for line in logs.getvalue().splitlines()]
    retries = [line for line in retries if line["event"] == "embedded_start_retried"]
    assert retries, logs.getvalue()
    assert retries[0]["level"] == "warning"
    assert "pre-existing shared memory block" in retries[0]["cause"]


def test_a_start_that_fails_for_good_fails_at_once_with_the_servers_log(data_dir: Path) -> None:
    conf = data_dir / "postgres" / "postgresql.auto.conf"
    saved = conf.read_text()
    conf.write_text(saved + "shared_buffers = 'plenty'\n")
    try:
        with pytest.raises(EmbeddedStartError) as failure:
            EmbeddedPostgres(data_dir)
    finally:
        conf.write_text(saved)
    message = str(failure.value)
    assert "did not start (attempt 1)" in message  # not retried
    assert 'invalid value for parameter "shared_buffers": "plenty"' in message
    assert message.rstrip().endswith("Examine the log output.")  # pg_ctl's last words
    assert server_pid(data_dir) is None
    with database_url(settings(data_dir)) as url:  # the folder is fine again
        assert answers(url)
    wait_stopped(data_dir)


def test_the_cli_reports_a_server_that_does_not_start_in_one_line_with_its_log(
    data_dir: Path,
) -> None:
    conf = data_dir / "postgres" / "postgresql.auto.conf"
    saved = conf.read_text()
    conf.write_text(saved + "shared_buffers = 'plenty'\n")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    environment |= {"CONSENT_ENV": "dev", "CONSENT_DATA_DIR": str(data_dir)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "service", "keys", "list"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        conf.write_text(saved)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: "), done.stderr
    assert "did not start" in done.stderr
    assert 'invalid value for parameter "shared_buffers": "plenty"' in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert server_pid(data_dir) is None

"""A closed stdout pipe (`consent-service … | head`, head gone) ends every command alike, as a
Unix tool stopped by SIGPIPE: exit 141 and nothing on stderr, no traceback and no "Exception
ignored" at exit (README, "CLI"). The commands come from the app itself, so a new one is covered
or the test says what it needs."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer.main

from service.cli import app
from service.core.cli_support import EXIT_PIPE_CLOSED
from service.core.logging import ACCESS_LOG, SINK, configure_logging, get_logger
from tests.conftest import TEST_RECEIPT_KEY
from tests.factories import EXAMPLES
from tests.live import free_port
from tests.ops.test_cli import cli_env, fetchval, run

__all__ = ["cli_env"]  # the fixture, shared with tests/ops/test_cli.py

RUNNER = Path(__file__).with_name("closed_stdout.py")
SUBJECT = "0b9f6f7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
NOBODY = "7d1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6"
SINCE, UNTIL = "2020-01-01T00:00:00Z", "2030-01-01T00:00:00Z"  # the stats' range (10 years)
LATER = "2100-01-01T00:00:00Z"
# Commands the test of every printing command leaves out, and why.
ELSEWHERE = {
    "openapi": "never writes to stdout: it writes files, and says so on stderr",
    "serve": "runs until stopped: test_serve_with_its_log_pipe_closed_serves_and_ends_quietly",
}


def command_paths() -> dict[str, bool]:
    """Every command and group of the app, by its words ('' is the program): is it a group?"""
    paths: dict[str, bool] = {}

    def walk(command: Any, words: tuple[str, ...]) -> None:
        subcommands = getattr(command, "commands", None)
        paths[" ".join(words)] = subcommands is not None
        for name, subcommand in (subcommands or {}).items():
            walk(subcommand, (*words, name))

    walk(typer.main.get_command(app), ())
    return paths


def closed_stdout(commands: list[tuple[list[str], dict[str, str]]]) -> list[tuple[int, str]]:
    """Each command's exit status and stderr, run with its stdout a pipe nobody reads."""
    answer = subprocess.run(
        [sys.executable, str(RUNNER)],
        input=json.dumps([{"args": args, "env": env} for args, env in commands]),
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")},
        timeout=300,
        check=True,
    )
    return [(code, err) for code, err in json.loads(answer.stdout)]


def test_help_and_version_end_quietly_for_every_command() -> None:
    commands: list[tuple[list[str], dict[str, str]]]
    commands = [([*path.split(), "--help"], {}) for path in command_paths()]
    commands.append((["--version"], {}))
    for (args, _), (code, err) in zip(commands, closed_stdout(commands), strict=True):
        assert (code, err) == (EXIT_PIPE_CLOSED, ""), (args, err)


def test_every_command_that_prints_ends_quietly(
    cli_env: dict[str, str], owner_url: str, tmp_path: Path
) -> None:
    env = cli_env | {"CONSENT_RECEIPT_KEY": TEST_RECEIPT_KEY}
    owner = env | {"CONSENT_DATABASE_URL": owner_url}
    # Something for each command to print: a property with a pending version, a key, an audit
    # row and its journal; for the subject's commands, an event of the subject's.
    schema = EXAMPLES / "itsailor.yaml"
    assert run(env, "schema", "publish", str(schema))[0] == 0
    pending = tmp_path / "pending.yaml"
    pending.write_text(schema.read_text().replace("Strictly necessary", "Essential"))
    assert run(env, "schema", "publish", str(pending), "--effective-at", LATER)[0] == 0
    code, out, _ = run(env, "keys", "create", "--name", "gone", "--scopes", "dsr:read", "--json")
    assert code == 0
    assert run(env, "dsr", "history", "--subject-id", SUBJECT)[0] == 0
    journal = tmp_path / "journal.jsonl"
    assert run(env, "backup", "journal", "-o", str(journal))[0] == 0

    # What each command is given (and as whom) to print something. They run all at once, so
    # none takes away what another prints: `dsr erase` erases someone else, `schema publish`
    # publishes another property.
    printing: dict[str, tuple[list[str], dict[str, str]]] = {
        "migrate": ([], owner),
        "stats": (["--property", "itsailor", "--since", SINCE, "--until", UNTIL, "--json"], env),
        "keys create": (["--name", "dsr-team", "--scopes", "dsr:read"], env),
        "keys list": ([], env),
        "keys revoke": ([json.loads(out)["id"]], env),
        "schema publish": ([str(EXAMPLES / "ailabrix.yaml")], env),
        "schema cancel": (["--property", "itsailor", "--version", "2"], env),
        "dsr history": (["--subject-id", SUBJECT], env),
        "dsr export": (["--subject-id", SUBJECT], env),
        "dsr erase": (["--subject-id", NOBODY, "--yes"], env),
        "dsr withdraw": (["--subject-id", SUBJECT, "--reference", "DSR-7"], env),
        "backup journal": ([], env),
        "backup reapply": ([str(journal), "--dry-run"], owner),
        "ledger verify": ([], env),
        "ledger head": ([], env),
        "retention purge": (["--dry-run"], owner),
    }
    commands = [path for path, group in command_paths().items() if not group]
    missing = set(commands) - set(printing) - set(ELSEWHERE)
    assert not missing, f"say what these commands need to print something: {sorted(missing)}"
    # The subject's commands run after the others: the event stored for them stands in for a
    # real one (the service's role stores events only through consent_record_events), and its
    # leaf is no record's, which `ledger verify` would report.
    subjects = [path for path in commands if path.startswith("dsr ")]
    others = [path for path in commands if path not in ELSEWHERE and path not in subjects]
    ended = closed_stdout([([*p.split(), *printing[p][0]], printing[p][1]) for p in others])
    fetchval(
        owner_url,
        "INSERT INTO consent_events (event_id, property, subject_id, event_type, schema_version,"
        " choices, effective, gpc, dnt, signals_applied, recorded_at, identity, leaf) VALUES"
        f" (gen_random_uuid(), 'itsailor', '{SUBJECT}', 'accept-all', 1, '{{}}', '{{}}', false,"
        " false, '[]', now(), sha256('identity'::bytea), sha256('leaf'::bytea)) RETURNING 1",
    )
    ended += closed_stdout([([*p.split(), *printing[p][0]], printing[p][1]) for p in subjects])
    for path, (code, err) in zip(others + subjects, ended, strict=True):
        if path == "migrate":  # what it says when done, on stderr, as it means to
            assert err.startswith("database at revision "), err
            err = err.partition("\n")[2]
        assert (code, err) == (EXIT_PIPE_CLOSED, ""), (path, err)


@contextlib.contextmanager
def serving(
    cli_env: dict[str, str], owner_url: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`serve` on a free port, its stdout and stderr piped to this test, once it is ready."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env |= cli_env | {"CONSENT_DATABASE_URL": owner_url, "CONSENT_RECEIPT_KEY": TEST_RECEIPT_KEY}
    with subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        yield process, port


def wait_ready(process: subprocess.Popen[bytes], port: int) -> None:
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "not ready in 60 s"
        time.sleep(0.1)


def stopped_quietly(process: subprocess.Popen[bytes]) -> bool:
    """A stop ends it as the other commands end when their reader is gone: exit 141, stderr
    empty."""
    assert process.stderr is not None
    process.send_signal(signal.SIGTERM)
    err = process.stderr.read().decode()
    assert (process.wait(timeout=60), err) == (EXIT_PIPE_CLOSED, "")
    return True


def test_serve_with_its_log_pipe_closed_serves_and_ends_quietly(
    cli_env: dict[str, str], owner_url: str
) -> None:
    """Its log lines (dev mode: the migration's, first) have no reader: they go nowhere, the API
    answers, and a stop ends it as the other commands end."""
    with serving(cli_env, owner_url) as (process, port):
        assert process.stdout is not None
        process.stdout.close()
        wait_ready(process, port)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        assert stopped_quietly(process)


def test_serve_whose_log_reader_goes_away_while_it_serves_goes_on_and_ends_quietly(
    cli_env: dict[str, str], owner_url: str
) -> None:
    """`serve | head`, head gone once the app logs on its own: the lines that follow (the access
    log, uvicorn's shutdown) go nowhere, requests are still answered, and a stop prints nothing
    on stderr."""
    with serving(cli_env, owner_url) as (process, port):
        assert process.stdout is not None
        wait_ready(process, port)
        assert process.stdout.readline()  # the reader was there
        process.stdout.close()
        for _ in range(2):  # the access log's lines are written a moment after the response
            assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            time.sleep(2 * SINK.FLUSH_DELAY)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
        assert stopped_quietly(process)


class GoneReader(io.StringIO):
    """A log stream whose reader went away: every write and flush fails, as on a broken pipe."""

    tries = 0

    def write(self, text: str) -> int:
        self.tries += 1
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def flush(self) -> None:
        self.tries += 1
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def test_the_log_sink_drops_every_line_after_its_reader_went_away(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Our own lines and the standard library's (uvicorn's): no error to the code that logs, no
    traceback on stderr, and no second try at the stream."""
    stream = GoneReader()
    configure_logging("INFO", stream)
    try:
        get_logger("service.test").info("first")
        logging.getLogger("uvicorn.error").info("second")
        ACCESS_LOG.request("0123abcd", "GET", "/healthz", 200, 1.5)
        SINK.flush()
        assert SINK.closed
    finally:
        configure_logging("INFO")
    assert stream.tries == 1
    assert capsys.readouterr().err == ""

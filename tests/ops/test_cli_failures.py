"""CLI failures are one line with the documented exit code (README, "CLI"): a usage mistake is 2,
a failure while running is 1, a closed stdout pipe ends quietly; never a traceback, never a
misleading "cannot connect" or "ledger broken"."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from service.core.cli_support import explain_database_error
from tests.factories import EXAMPLES
from tests.ops.test_cli import cli_env, fetchval, run

__all__ = ["cli_env"]  # the fixture, shared with tests/ops/test_cli.py

SUBJECT = "0b9f6f7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


def one_line(err: str) -> str:
    assert err.count("\n") == 1, err  # one line, no traceback
    assert "Traceback" not in err
    return err.rstrip("\n")


def test_a_negative_since_is_a_usage_error(cli_env: dict[str, str]) -> None:
    code, _, err = run(cli_env, "ledger", "verify", "--since", "-5")
    assert (code, one_line(err)) == (
        2,
        "error: --since: -5 is not a seal number (0: the genesis seal)",
    )


def test_a_since_past_the_latest_seal_is_no_tamper_alarm(cli_env: dict[str, str]) -> None:
    code, _, err = run(cli_env, "ledger", "verify", "--since", "999")
    # A fresh database holds the genesis seal only.
    assert (code, one_line(err)) == (
        1,
        "error: --since: there is no seal from 999 on (the latest is seal 0)",
    )
    code, out, _ = run(cli_env, "ledger", "verify", "--since", "0")
    assert code == 0
    assert out.startswith("ledger verified: seals 0 to 0")


def audit_rows(db_url: str) -> object:
    return fetchval(db_url, "SELECT count(*) FROM dsr_audit")


@pytest.mark.parametrize(
    ("target", "reason"),
    [(".", "Is a directory"), ("no-such-folder/export.json", "No such file or directory")],
)
def test_an_export_to_a_path_it_cannot_write_fails_first_and_is_not_audited(
    cli_env: dict[str, str], tmp_path: Path, db_url: str, target: str, reason: str
) -> None:
    path = tmp_path / target
    code, _, err = run(cli_env, "dsr", "export", "--subject-id", SUBJECT, "-o", str(path))
    assert (code, one_line(err)) == (1, f"error: cannot write {path}: {reason}")
    assert audit_rows(db_url) == 0  # nothing was looked up, so nothing to audit


def test_a_failed_export_leaves_no_file_behind(
    cli_env: dict[str, str], tmp_path: Path, db_url: str
) -> None:
    path = tmp_path / "export.json"
    code, _, err = run(
        cli_env, "dsr", "export", "--subject-id", SUBJECT, "--property", "nosuch", "-o", str(path)
    )
    assert (code, one_line(err)) == (1, "error: there is no property named 'nosuch'")
    assert not path.exists()
    code, _, _ = run(cli_env, "dsr", "export", "--subject-id", SUBJECT, "-o", str(path))
    assert code == 0
    assert path.stat().st_mode & 0o777 == 0o600
    assert audit_rows(db_url) == 1


def test_a_file_error_is_not_a_connection_error() -> None:
    url = "postgresql://someone@db.example:5432/consent"
    directory = IsADirectoryError(21, "Is a directory", "/tmp")
    assert explain_database_error(directory, url) == "/tmp: Is a directory"
    refused = ConnectionRefusedError(111, "Connection refused")
    assert str(explain_database_error(refused, url)).startswith(
        "cannot connect to PostgreSQL at db.example:5432/consent"
    )


@pytest.mark.parametrize(
    "command",
    [
        ("dsr", "export", "--subject-id", SUBJECT, "--format", "dpv"),
        ("dsr", "history", "--subject-id", SUBJECT),
        ("backup", "journal"),
    ],
)
def test_a_closed_stdout_pipe_ends_quietly(
    cli_env: dict[str, str], tmp_path: Path, owner_url: str, command: tuple[str, ...]
) -> None:
    # Something to write: an event of the subject's (the service's role stores events only
    # through consent_record_events), and an audit row for the journal.
    assert run(cli_env, "schema", "publish", str(EXAMPLES / "itsailor.yaml"))[0] == 0
    fetchval(
        owner_url,
        "INSERT INTO consent_events (event_id, property, subject_id, event_type, schema_version,"
        " choices, effective, gpc, dnt, signals_applied, recorded_at, identity, leaf) VALUES"
        f" (gen_random_uuid(), 'itsailor', '{SUBJECT}', 'accept-all', 1, '{{}}', '{{}}', false,"
        " false, '[]', now(), sha256('identity'::bytea), sha256('leaf'::bytea)) RETURNING 1",
    )
    run(cli_env, "dsr", "history", "--subject-id", SUBJECT)
    # `consent-service … | head` where head has already exited: a real pipe nobody reads.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")} | cli_env
    with subprocess.Popen(
        [sys.executable, "-c", "from service.cli import app; app()", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.close()
        err = process.stderr.read().decode()
        assert process.wait(timeout=120) == 128 + signal.SIGPIPE, err
    assert "error" not in err.lower()
    assert "Broken pipe" not in err


def test_a_journal_to_a_path_it_cannot_write_is_one_line(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    code, _, err = run(cli_env, "backup", "journal", "-o", str(tmp_path))
    assert (code, one_line(err)) == (1, f"error: cannot write {tmp_path}: Is a directory")


def test_a_schema_file_that_is_not_utf8_is_named(cli_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\x00\xff\xfe")
    code, _, err = run(cli_env, "schema", "publish", str(path))
    assert (code, one_line(err)) == (1, f"error: {path}: not UTF-8 text (byte 0xff at offset 1)")
    code, _, _ = run(cli_env, "schema", "publish", str(EXAMPLES / "itsailor.yaml"))
    assert code == 0


@pytest.mark.parametrize("name", ["", "   ", "\t"])
def test_a_key_needs_a_name(cli_env: dict[str, str], db_url: str, name: str) -> None:
    code, _, err = run(cli_env, "keys", "create", "--name", name, "--scopes", "dsr:read")
    assert (code, one_line(err)) == (
        2,
        "error: a key needs a name (who or what uses it, e.g. 'dsr-team')",
    )
    assert fetchval(db_url, "SELECT count(*) FROM api_keys") == 0


def test_a_key_name_is_kept_without_surrounding_spaces(cli_env: dict[str, str]) -> None:
    code, out, _ = run(
        cli_env, "keys", "create", "--name", " dsr-team ", "--scopes", "dsr:read", "--json"
    )
    assert code == 0
    assert '"name": "dsr-team"' in out


async def test_migrate_as_a_login_without_rights_says_which_role_runs_it(
    server_url: str, tmp_path: Path
) -> None:
    """PostgreSQL's own "permission denied for schema public" said nothing of the fix: the
    owner's commands run as the owner, the rest as a member of consent_api."""
    import uuid

    from sqlalchemy import make_url

    from tests.conftest import _admin, database_url

    name, role = f"consent_t_{uuid.uuid4().hex[:12]}", f"consent_t_{uuid.uuid4().hex[:12]}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    await _admin(server_url, f'CREATE ROLE "{role}" LOGIN')
    try:
        url = make_url(database_url(server_url, name)).set(username=role, password=None)
        env = {
            "CONSENT_DATABASE_URL": url.render_as_string(hide_password=False),
            "CONSENT_DATA_DIR": str(tmp_path),
        }
        code, _, err = await asyncio.to_thread(run, env, "migrate")
        assert code == 1
        assert one_line(err).endswith(
            "permission denied for schema public: `migrate`, `retention purge` and `backup "
            "reapply` run as the tables' owner, the rest as a member of consent_api"
        ), err
    finally:
        await _admin(server_url, f'DROP DATABASE "{name}" WITH (FORCE)')
        await _admin(server_url, f'DROP ROLE "{role}"')

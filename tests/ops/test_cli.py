"""The CLI against a real database: keys, publishing, dev-mode examples, readable failures."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from bench.cluster import free_port
from service.cli import app
from service.consent_schema.cli import publish_examples_if_empty
from service.core.db_url import sync_dsn
from service.core.logging import SINK
from tests.conftest import TEST_KEY, TEST_RECEIPT_KEY, _admin, database_url
from tests.factories import EXAMPLES


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "CONSENT_DATABASE_URL": db_url,
        "CONSENT_IP_HASH_SALT": "cli-test-key-0123456789-abcdefghijklmnop",
        "CONSENT_DATA_DIR": str(tmp_path / "data"),
        "CONSENT_ENV": "dev",
    }
    monkeypatch.chdir(tmp_path)  # no stray .env from the checkout
    return env


def fetchval(db_url: str, query: str) -> object:
    async def go() -> object:
        connection = await asyncpg.connect(db_url)
        try:
            return await connection.fetchval(query)
        finally:
            await connection.close()

    return asyncio.run(go())


def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    # In one process, one command's logging setup (`migrate` points it at the runner's stdout,
    # closed when the command ends) would outlive it: each runs with the test's own setup.
    root = logging.getLogger()
    handlers, level, target = root.handlers[:], root.level, SINK.target
    try:
        result = CliRunner().invoke(app, list(args), env=env, prog_name="consent-service")
    finally:
        root.handlers[:], SINK.target = handlers, target
        root.setLevel(level)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_what_a_command_logs_goes_to_stderr_not_into_its_result(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """In dev mode the first command that hashes generates the key and warns: on stderr, so the
    result on stdout (a JSON export, `--json`) is the result alone."""
    env = {k: v for k, v in cli_env.items() if k != "CONSENT_IP_HASH_SALT"}
    subject = "6a1f3c0e-4b7d-4e42-9d0b-3f1e2a9c8b71"
    done = subprocess.run(
        [sys.executable, "-m", "service", "dsr", "export", "--subject-id", subject],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["events"] == []
    assert "dev_ip_hash_key_generated" in done.stderr
    assert (tmp_path / "data" / "ip-hash.key").exists()


def test_keys_create_list_revoke(cli_env: dict[str, str]) -> None:
    code, out, _ = run(
        cli_env, "keys", "create", "--name", "dsr-team", "--scopes", "dsr:read,audit:read", "--json"
    )
    assert code == 0
    created = json.loads(out)
    assert set(created) == {"id", "name", "scopes", "secret"}
    assert created["scopes"] == ["audit:read", "dsr:read"]
    assert created["secret"].startswith("csk_")

    code, out, _ = run(cli_env, "keys", "list", "--json")
    listed = json.loads(out)
    assert [k["id"] for k in listed] == [created["id"]]
    assert "secret" not in listed[0]
    assert created["secret"] not in out
    assert listed[0]["created_at"].endswith("Z")  # as every time the service shows

    code, out, _ = run(cli_env, "keys", "revoke", created["id"], "--json")
    assert code == 0
    assert json.loads(out)["revoked_at"].endswith("Z")
    code, out, _ = run(cli_env, "keys", "list")
    assert "revoked" in out


def test_a_misspelled_setting_is_named_not_silently_ignored(cli_env: dict[str, str]) -> None:
    """Behind a proxy, CONSENT_TRUSTED_PROXY (for ..._PROXIES) would make every visitor the
    proxy's address; the project's own tool variables are not settings and pass quietly."""
    env = cli_env | {"CONSENT_TRUSTED_PROXY": "10.0.0.0/8", "CONSENT_PG_BIN": "/nowhere"}
    code, _, err = run(env, "keys", "list")
    assert code == 0
    assert err.splitlines()[0] == (
        "warning: CONSENT_TRUSTED_PROXY is not a setting (did you mean "
        "CONSENT_TRUSTED_PROXIES?): it is ignored"
    )
    assert "CONSENT_PG_BIN" not in err


def test_keys_create_rejects_unknown_scopes(cli_env: dict[str, str]) -> None:
    code, _, err = run(cli_env, "keys", "create", "--name", "x", "--scopes", "dsr:read,admin")
    assert code == 2
    assert "unknown scope(s): admin" in err


def test_revoking_an_unknown_key_fails(cli_env: dict[str, str]) -> None:
    code, _, err = run(cli_env, "keys", "revoke", "key_nope")
    assert code == 1
    assert "no API key with id 'key_nope'" in err


def test_schema_publish_then_unchanged_then_non_material(
    cli_env: dict[str, str], tmp_path: Path, db_url: str
) -> None:
    source = EXAMPLES / "ailabrix.yaml"
    code, out, _ = run(cli_env, "schema", "publish", str(source), "--json")
    assert code == 0
    assert json.loads(out) | {"content_hash": None, "effective_at": None} == {
        "property": "ailabrix",
        "version": 1,
        "created": True,
        "material": True,
        "last_material_version": 1,
        "content_hash": None,
        "effective_at": None,
    }
    code, out, _ = run(cli_env, "schema", "publish", str(source))
    assert (code, out.strip()) == (0, "unchanged: ailabrix version 1 is current")

    edited = tmp_path / "edited.yaml"
    edited.write_text(
        source.read_text().replace('label: "Strictly necessary"', 'label: "Essential"')
    )
    code, out, _ = run(cli_env, "schema", "publish", str(edited), "--non-material")
    assert (code, out.strip()) == (0, "published ailabrix version 2 (non-material)")

    # A property is permanent: a new name given by --property needs --create.
    code, _, err = run(cli_env, "schema", "publish", str(edited), "--property", "ailabrx")
    assert code == 1
    assert "there is no property 'ailabrx'" in err
    assert "--create" in err
    code, out, _ = run(
        cli_env, "schema", "publish", str(edited), "--property", "ailabrix-staging", "--create"
    )
    assert (code, out.strip()) == (0, "published ailabrix-staging version 1 (material)")
    code, out, _ = run(cli_env, "schema", "publish", str(source), "--property", "ailabrix-staging")
    assert (code, out.strip()) == (0, "published ailabrix-staging version 2 (material)")
    assert fetchval(db_url, "SELECT published_by FROM consent_schema_versions LIMIT 1") == "cli"


def test_a_broken_file_names_every_bad_field(cli_env: dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    text = (EXAMPLES / "itsailor.yaml").read_text()
    text = text.replace("consent_ttl_days: 365", "consent_ttl_days: -1")
    text = text.replace("party: first", "party: second", 1)
    broken.write_text(text)
    code, _, err = run(cli_env, "schema", "publish", str(broken))
    assert code == 1
    assert "consent_ttl_days: Input should be greater than or equal to 1" in err
    assert "categories[0].cookies[0].party: Input should be 'first' or 'third'" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "property: a\nproperty: b\n",
            ": not valid YAML: line 2, column 1: duplicate key 'property'",
        ),
        ("- just\n- a list\n", ": expected a mapping"),
        (
            "key: [unclosed\n",
            ": not valid YAML: line 2, column 1: expected ',' or ']', but got '<stream end>' "
            "(while parsing a flow sequence)",
        ),
        (
            "purpose: the structure of our banner: categories\n",
            ": not valid YAML: line 1, column 37: mapping values are not allowed here",
        ),
    ],
)
def test_unreadable_files_fail_clearly(
    cli_env: dict[str, str], tmp_path: Path, content: str, message: str
) -> None:
    """Each in one line that names the file and, for YAML, where in it."""
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    code, _, err = run(cli_env, "schema", "publish", str(path))
    assert code == 1
    assert err.startswith(f"error: {path}{message}"), err
    assert err.count("\n") == 1, err


async def test_dev_mode_publishes_the_examples_once_on_an_empty_database(
    db_url: str, db: asyncpg.Connection
) -> None:
    await asyncio.to_thread(publish_examples_if_empty, db_url)
    rows = await db.fetch("SELECT property, version FROM consent_schema_versions ORDER BY 1")
    assert [(r["property"], r["version"]) for r in rows] == [("ailabrix", 1), ("itsailor", 1)]
    await asyncio.to_thread(publish_examples_if_empty, db_url)
    assert await db.fetchval("SELECT count(*) FROM consent_schema_versions") == 2


def test_production_refuses_to_start_without_a_url_or_a_strong_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run({"CONSENT_ENV": "production"}, "migrate")
    assert code == 2
    assert "CONSENT_DATABASE_URL is required" in err
    weak = {
        "CONSENT_ENV": "production",
        "CONSENT_DATABASE_URL": "postgresql://x@localhost/x",
        "CONSENT_IP_HASH_SALT": "change-me",
    }
    code, _, err = run(weak, "serve")
    assert code == 2
    assert "CONSENT_IP_HASH_SALT must be a random secret" in err


def test_dsr_commands_find_export_and_erase_with_audit(
    cli_env: dict[str, str], tmp_path: Path, db_url: str, owner_url: str
) -> None:
    subject = "0b9f6f7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    code, _, _ = run(cli_env, "schema", "publish", str(EXAMPLES / "itsailor.yaml"))
    assert code == 0
    rows = ", ".join(
        f"('{uuid_text}', 'itsailor', '{subject}', 'accept-all', 1, '{{}}', '{{}}', false, false,"
        f" '[]', now(), sha256('identity'::bytea), sha256('{uuid_text}'::bytea))"
        for uuid_text in (
            "11111111-1111-4111-8111-111111111111",
            "22222222-2222-4222-8222-222222222222",
        )
    )
    fetchval(
        owner_url,  # the service's role stores events only through consent_record_events
        "INSERT INTO consent_events (event_id, property, subject_id, event_type, schema_version,"
        " choices, effective, gpc, dnt, signals_applied, recorded_at, identity, leaf)"
        f" VALUES {rows} RETURNING 1",
    )

    code, out, err = run(cli_env, "dsr", "history", "--subject-id", subject)
    assert code == 0
    assert [json.loads(line)["event_type"] for line in out.splitlines()] == ["accept-all"] * 2
    assert "2 event(s)" in err

    target = tmp_path / "export.json"
    code, _, err = run(cli_env, "dsr", "export", "--subject-id", subject, "-o", str(target))
    assert code == 0
    assert target.stat().st_mode & 0o777 == 0o600  # personal data: its owner only
    export = json.loads(target.read_text())
    assert export["exported_at"].endswith("Z")
    assert export["event_count"] == 2
    assert [v["version"] for v in export["schema_versions"]] == [1]

    code, out, _ = run(cli_env, "dsr", "erase", "--subject-id", subject, "--dry-run", "--json")
    dry_run = {
        "dry_run": True, "mode": "delete", "matched": 2, "consent_ids_with_earlier_decisions": 0
    }  # fmt: skip
    assert (code, json.loads(out)) == (0, dry_run)
    code, _, err = run(cli_env, "dsr", "erase", "--subject-id", subject)  # no answer: no erasure
    assert code == 1
    assert "delete 2 event(s) matching this request?" in err
    assert err.endswith("\nerasure not confirmed: nothing erased\n")  # not click's "Aborted!"
    assert "Aborted" not in err
    assert fetchval(db_url, "SELECT count(*) FROM consent_events") == 2
    code, out, _ = run(
        cli_env, "dsr", "erase", "--subject-id", subject, "--reference", "T-9", "--yes", "--json"
    )
    assert code == 0
    assert json.loads(out)["deleted"] == 2
    code, out, _ = run(cli_env, "dsr", "erase", "--subject-id", subject, "--yes", "--json")
    assert json.loads(out)["deleted"] == 0
    # history, export; then per erase command a counted look-up, and each erasure itself
    assert fetchval(db_url, "SELECT count(*) FROM dsr_audit WHERE actor = 'cli'") == 8
    assert (
        fetchval(db_url, f"SELECT count(*) FROM dsr_audit WHERE identifier_hash LIKE '%{subject}%'")
        == 0
    )


def test_dsr_erase_says_which_earlier_decisions_go_with_it(
    cli_env: dict[str, str], owner_url: str
) -> None:
    """An acceptance made signed out, then a refusal signed in: erased by account id, the
    refusal would leave the acceptance as the consent id's state. The count asked about says so,
    and the consent id's earlier events go too, as an erasure of their own."""
    from pydantic import SecretStr

    from service.core.hashing import Hasher

    subject = "3c9f6f7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    account = Hasher.from_secrets(SecretStr(cli_env["CONSENT_IP_HASH_SALT"]), []).user("u-7")
    assert run(cli_env, "schema", "publish", str(EXAMPLES / "itsailor.yaml"))[0] == 0
    for event_type, user_hash in (
        ("accept-all", "NULL"),
        ("reject-all", f"decode('{account}', 'hex')"),
    ):
        fetchval(
            owner_url,
            "INSERT INTO consent_events (event_id, property, subject_id, event_type,"
            " schema_version, choices, effective, gpc, dnt, signals_applied, recorded_at,"
            " identity, leaf, user_hash, hash_key_id)"
            f" VALUES (gen_random_uuid(), 'itsailor', '{subject}', '{event_type}', 1, '{{}}',"
            " '{}', false, false, '[]', now(), sha256('identity'::bytea),"
            f" sha256(gen_random_uuid()::text::bytea), {user_hash}, 'k') RETURNING 1",
        )
    code, out, _ = run(cli_env, "dsr", "erase", "--user-id", "u-7", "--dry-run")
    assert (code, out) == (
        0,
        "would delete 2 event(s) (1 of them every other event of 1 consent id(s) whose latest"
        " decision it matches); nothing was changed\n",
    )
    code, out, _ = run(cli_env, "dsr", "erase", "--user-id", "u-7", "--yes")
    assert code == 0
    first, second = out.splitlines()
    assert re.fullmatch(r"erasure [0-9a-f-]{36}: delete 2 event\(s\)", first), out
    assert re.fullmatch(r"  with erasure [0-9a-f-]{36}: a consent id's earlier decisions", second)
    assert fetchval(owner_url, "SELECT count(*) FROM consent_events") == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["dsr", "history"],
            "error: options: name exactly one identifier: --subject-id, --ip or --user-id\n",
        ),
        (
            ["dsr", "history", "--ip", "1.2.3.4", "--user-id", "x"],
            "error: options: name exactly one identifier: --subject-id, --ip or --user-id "
            "(got --ip, --user-id)\n",
        ),
        (["dsr", "erase", "--ip", "999.1.1.1"], "error: --ip: not an IPv4 or IPv6 address\n"),
        (["dsr", "erase", "--user-id", "x", "--mode", "shred"], "error: --mode: "),
        (
            ["dsr", "history", "--ip", "1.2.3.4", "--since", "2026-01-01"],
            "error: --since: ",
        ),
        (
            ["dsr", "withdraw", "--reference", "W-1"],
            "error: options: name exactly one identifier: --subject-id or --user-id\n",
        ),
        (
            ["dsr", "withdraw", "--ip", "1.2.3.4", "--reference", "W-1"],
            "error: --ip: a withdrawal is recorded by --subject-id or --user-id, not by IP address",
        ),
    ],
)
def test_dsr_commands_reject_bad_options(
    cli_env: dict[str, str], args: list[str], message: str
) -> None:
    """Each mistake is named as the command line spells it (the flag, not the API's field)."""
    code, _, err = run(cli_env, *args)
    assert code == 2
    assert err.startswith(message), err
    assert "Value error" not in err


def test_dsr_commands_on_an_unknown_property_say_so(cli_env: dict[str, str]) -> None:
    subject = "0b9f6f7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    for command in ("history", "export", "erase"):
        code, _, err = run(cli_env, "dsr", command, "--subject-id", subject, "--property", "nosuch")
        assert code == 1, command
        assert "there is no property named 'nosuch'" in err


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://postgres@127.0.0.1:1/x", "connection refused"),
        ("postgresql://someone@no-such-host.invalid/x", "cannot resolve the host"),
    ],
)
def test_database_mistakes_are_one_line(cli_env: dict[str, str], url: str, message: str) -> None:
    code, _, err = run(cli_env | {"CONSENT_DATABASE_URL": url}, "migrate")
    assert code == 1
    assert message in err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert "Traceback" not in err


def test_a_missing_database_and_an_unknown_role_are_one_line(
    cli_env: dict[str, str], db_url: str
) -> None:
    from sqlalchemy.engine import make_url

    missing = make_url(db_url).set(database="consent_no_such_db").render_as_string(False)
    code, _, err = run(cli_env | {"CONSENT_DATABASE_URL": missing}, "keys", "list")
    assert (code, err.count("\n")) == (1, 1), err
    assert 'database "consent_no_such_db" does not exist' in err
    stranger = make_url(db_url).set(username="consent_no_such_role").render_as_string(False)
    code, _, err = run(cli_env | {"CONSENT_DATABASE_URL": stranger}, "keys", "list")
    assert (code, err.count("\n")) == (1, 1), err
    assert "refused the login" in err


def test_an_unmigrated_database_says_to_migrate(cli_env: dict[str, str], server_url: str) -> None:
    """Production does not migrate by itself: a command on a database without the service's
    tables says to run `migrate` (or that the name may be wrong), not just which table is
    missing."""
    name = f"consent_empty_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    try:
        env = cli_env | {
            "CONSENT_ENV": "production",
            "CONSENT_IP_HASH_SALT": TEST_KEY,
            "CONSENT_RECEIPT_KEY": TEST_RECEIPT_KEY,
            "CONSENT_DATABASE_URL": database_url(server_url, name),
        }
        for args in (("keys", "list"), ("schema", "publish", str(EXAMPLES / "itsailor.yaml"))):
            code, _, err = run(env, *args)
            assert (code, err.count("\n")) == (1, 1), err
            assert "is not migrated to this release" in err, err
            assert "run `consent-service migrate` as the tables' owner" in err
    finally:
        asyncio.run(_admin(server_url, f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["dsr", "history", "--bogus"],
            "No such option: --bogus (see 'consent-service dsr history",
        ),
        (["keys", "create"], "Missing option '--name' (see 'consent-service keys create --help')"),
        (["serve", "--port", "abc"], "Invalid value for '--port': "),
        (["serve", "--port", "99999"], "Invalid value for '--port': Input should be less than or"),
        (["serve", "--port", "-1"], "Invalid value for '--port': Input should be greater than or"),
        (
            ["serve", "--host", "nosuchhost.invalid"],
            "--host: 'nosuchhost.invalid' is neither an IP address nor a name that resolves (",
        ),
        (
            ["serve", "--host", "256.0.0.1"],
            "--host: '256.0.0.1' is neither an IP address nor a name that resolves (",
        ),
        (["serve", "--workers", "0"], "Invalid value for '--workers': "),
        (["nosuch"], "No such command 'nosuch' (see 'consent-service --help')"),
        (["--bogus"], "No such option: --bogus (see 'consent-service --help')"),
    ],
)
def test_a_mistaken_command_line_is_one_line(
    cli_env: dict[str, str], args: list[str], message: str
) -> None:
    code, out, err = run(cli_env, *args)
    assert (code, out) == (2, ""), err
    assert err.startswith(f"error: {message}"), err
    assert err.count("\n") == 1, err


def test_version() -> None:
    from service import __version__

    code, out, _ = run({}, "--version")
    assert (code, out.strip()) == (0, f"consent-service {__version__}")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "CONSENT_TRUSTED_PROXIES",
            "notacidr",
            "CONSENT_TRUSTED_PROXIES: 'notacidr' is not a network",
        ),
        # Read as 10.0.0.0/8, a typo for /32 would trust a whole /8.
        (
            "CONSENT_TRUSTED_PROXIES",
            "10.0.0.1/8",
            "CONSENT_TRUSTED_PROXIES: '10.0.0.1/8' has bits set past its prefix: write the "
            "network (10.0.0.0/8) or the one address (10.0.0.1)",
        ),
        ("CONSENT_LOG_LEVEL", "loud", "CONSENT_LOG_LEVEL: unknown log level 'loud'"),
        ("CONSENT_FORWARDED_HEADER", "x-real-ip", "CONSENT_FORWARDED_HEADER:"),
        # A database URL's mistakes are found with the settings, not by a driver's traceback
        # when it connects; the password is never shown.
        (
            "CONSENT_DATABASE_URL",
            "postgresql://u:hunter2@127.0.0.1:5432/db?connect_timeout=5",
            "CONSENT_DATABASE_URL: the query parameter 'connect_timeout' is not one the "
            "service's drivers both take (they take host, port, user, password, passfile, "
            "sslmode, sslrootcert, sslcert, sslkey, sslcrl, sslpassword, "
            "ssl_min_protocol_version, ssl_max_protocol_version, target_session_attrs, "
            "krbsrvname, gsslib)",
        ),
        (
            "CONSENT_DATABASE_URL",
            "postgresql://u:hunter2@127.0.0.1:5432/db?sslmode=verify-full&sslrootcert=/no/ca.pem",
            "CONSENT_DATABASE_URL: sslrootcert '/no/ca.pem' is not a file the service can read",
        ),
        (
            "CONSENT_DATABASE_URL",
            "postgresql://u:hunter2@127.0.0.1:5432/db?ssl_min_protocol_version=TLSv9",
            "CONSENT_DATABASE_URL: ssl_min_protocol_version must be one of TLSv1, TLSv1.1, "
            "TLSv1.2, TLSv1.3; not 'TLSv9'",
        ),
        (
            "CONSENT_DATABASE_URL",
            "postgresql://u:hunter2@127.0.0.1:5432/db?sslmode=bogus",
            "CONSENT_DATABASE_URL: sslmode must be one of disable, allow, prefer, require, "
            "verify-ca, verify-full; not 'bogus'",
        ),
        (
            "CONSENT_DATABASE_URL",
            "postgresql://u:hunter2@127.0.0.1:5432/db?sslmode=require&sslmode=disable",
            "CONSENT_DATABASE_URL: sslmode must be given once",
        ),
        (
            "CONSENT_DATABASE_URL",
            "postgresql://u:hunter2@db1:5432,db2:abc/db",
            "CONSENT_DATABASE_URL: a port is not a number; the form is postgresql://",
        ),
        (
            # A character the parser refuses: its own message would quote the password.
            "CONSENT_DATABASE_URL",
            "postgresql://u:hunter2\uff20x@127.0.0.1:5432/db",
            "CONSENT_DATABASE_URL: not a usable URL; the form is postgresql://",
        ),
        (
            "CONSENT_DATABASE_URL",
            "postgresql://u:hunter2@127.0.0.1:notaport/db",
            "CONSENT_DATABASE_URL: the port is not a number; the form is postgresql://",
        ),
        (
            "CONSENT_DATABASE_URL",
            "postgresql://u:hunter2@db1:5432,db2:70000/db",
            "CONSENT_DATABASE_URL: port 70000 is not a TCP port (1 to 65535)",
        ),
        (
            "CONSENT_DATABASE_URL",
            "mysql://u:hunter2@127.0.0.1/db",
            "CONSENT_DATABASE_URL: not a PostgreSQL URL: mysql://u:***@127.0.0.1/db",
        ),
        ("CONSENT_DATABASE_URL", "not-a-url", "CONSENT_DATABASE_URL: not a URL; the form is"),
        ("CONSENT_DATA_DIR", __file__, f"CONSENT_DATA_DIR: {__file__!r} is a file, not a folder"),
    ],
)
def test_a_bad_setting_is_named_in_plain_words(
    cli_env: dict[str, str], variable: str, value: str, message: str
) -> None:
    code, _, err = run(cli_env | {variable: value}, "keys", "list")
    assert code == 2
    assert message in err
    assert err.count("\n") == 1, err
    assert "hunter2" not in err
    assert "Value error" not in err
    assert "LAX-OR-STRICT" not in err


@pytest.mark.parametrize(
    "form",
    [
        "{user}@/{db}?host={host}&port={port}",  # libpq's parameters in the query
        "nobody@{host}:{port}/{db}?user={user}",
        "{user}@{host}:{port}/{db}?passfile=/nonexistent&sslmode=disable",
        "{user}@/{db}?host={host}:{port}&host={host}:{port}",  # SQLAlchemy's several servers
        "{user}@/{db}?host=127.0.0.1:{dead}&host={host}:{port}",  # the first one down
        "{user}@{host}:{dead}/{db}?port={port}",  # the query's port wins, as in libpq
        "{user}@{host},{host}/{db}?port={port}",  # for every host of the list
        "{user}@nowhere.invalid:{port}/{db}?host={host}",  # the query's host, the URL's port
        "{user}@{host}:{port},{host}:{port}/{db}?target_session_attrs=read-write",  # libpq's
    ],
)
def test_every_url_form_both_drivers_take_is_accepted(cli_env: dict[str, str], form: str) -> None:
    """The URL check refuses only what a driver would fail on: these connected before it."""
    url = make_url(cli_env["CONSENT_DATABASE_URL"])
    if not url.host:
        pytest.skip("the test server listens on a Unix socket only (no TCP host to name)")
    user = (url.username or "") + (f":{url.password}" if url.password else "")
    written = "postgresql://" + form.format(
        user=user, host=url.host, port=url.port or 5432, db=url.database, dead=free_port()
    )
    code, _, err = run(cli_env | {"CONSENT_DATABASE_URL": written}, "keys", "list")
    assert code == 0, (written, err)


def test_a_mode_that_verifies_the_server_needs_its_ca(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Without sslrootcert, PGSSLROOTCERT or ~/.postgresql/root.crt, asyncpg would fail at its
    first connection; the settings say so at start."""
    url = "postgresql://u:hunter2@127.0.0.1:5432/db?sslmode=verify-ca"
    code, _, err = run(
        cli_env | {"CONSENT_DATABASE_URL": url, "HOME": str(tmp_path)}, "keys", "list"
    )
    assert code == 2
    assert (
        "CONSENT_DATABASE_URL: sslmode=verify-ca checks the server's certificate against its CA: "
        "name the CA's certificate file with sslrootcert=/path/to/ca.pem (or set PGSSLROOTCERT)"
    ) in err


@pytest.mark.parametrize(
    ("url", "where"),
    [
        # An IPv6 address in the query, bare as libpq takes it or in brackets: it was refused at
        # start ("a port is not a number") or read as the host `` on port `:1`.
        ("postgresql://u@/db?host=[::1]&port={dead}", "[::1]:{dead}/db"),
        ("postgresql://u@/db?host=::1&port={dead}", "[::1]:{dead}/db"),
        ("postgresql://u@/db?host=[::1]:{dead}", "[::1]:{dead}/db"),
        # The server named is the one the drivers tried: the query's host, not the URL's own.
        ("postgresql://u@nowhere.invalid:5432/db?host=127.0.0.1&port={dead}", "127.0.0.1:{dead}/db"),
        ("postgresql://u:hunter2@127.0.0.1:{dead},127.0.0.1:{dead}/db", "127.0.0.1:{dead},127.0.0.1:{dead}/db"),
    ],
)  # fmt: skip
def test_a_server_that_refuses_is_named_as_the_drivers_read_it(
    cli_env: dict[str, str], url: str, where: str
) -> None:
    dead = free_port()
    env = cli_env | {"CONSENT_DATABASE_URL": url.format(dead=dead)}
    code, _, err = run(env, "keys", "list")
    assert (code, err.count("\n")) == (1, 1), err
    assert f"cannot connect to PostgreSQL at {where.format(dead=dead)}: " in err, err
    assert "hunter2" not in err


def test_a_port_alone_stays_for_the_default_socket() -> None:
    """No host anywhere: asyncpg's default sockets, on the query's port (it was moved into an
    empty host, which asyncpg resolved as a name)."""
    assert sync_dsn("postgresql://u@/db?port=5433") == "postgresql://u@/db?port=5433"


@pytest.mark.parametrize("dead_first", [True, False])
def test_several_servers_in_sqlalchemy_s_form_reach_the_writer_as_a_list(
    db_url: str, dead_first: bool
) -> None:
    """The writer connects with asyncpg's own URL parser, which keeps only the last of a repeated
    parameter: SQLAlchemy's `?host=…&host=…` must reach it as libpq's one list, or a writer
    would try one server of several (here, whichever comes last)."""
    url = make_url(db_url)
    if not url.host:
        pytest.skip("the test server listens on a Unix socket only (no TCP host to name)")
    live, dead = f"{url.host}:{url.port or 5432}", f"127.0.0.1:{free_port()}"
    hosts = [dead, live] if dead_first else [live, dead]
    written = url.set(host=None, port=None, query={"host": tuple(hosts)})

    async def connect() -> object:
        connection = await asyncpg.connect(sync_dsn(written.render_as_string(hide_password=False)))
        try:
            return await connection.fetchval("SELECT 1")
        finally:
            await connection.close()

    assert asyncio.run(connect()) == 1


def test_help_is_plain_and_flags_show_no_placeholder() -> None:
    code, out, _ = run({}, "dsr", "erase", "--help")
    assert code == 0
    assert "<bool>" not in out
    assert "╭" not in out  # no boxes: readable in any terminal and in a log
    assert "--dry-run" in out


def test_usage_lines_name_their_arguments_plainly() -> None:
    # Typer's notation: {required}, [optional], ... for several.
    for command, usage in (
        (("schema", "publish"), " schema publish [OPTIONS] {FILE}"),
        (("backup", "reapply"), " backup reapply [OPTIONS] {FILE}..."),
    ):
        code, out, _ = run({}, *command, "--help")
        assert code == 0
        assert out.splitlines()[0].strip().endswith(usage)  # (the runner names the program)


def test_erasing_what_matches_nothing_asks_nothing_and_is_audited(
    cli_env: dict[str, str], db_url: str
) -> None:
    code, out, err = run(cli_env, "dsr", "erase", "--subject-id", str(uuid.uuid4()))
    assert code == 0, err
    assert out.startswith("erasure ")
    assert out.rstrip().endswith("delete 0 event(s)")
    assert fetchval(db_url, "SELECT count(*) FROM dsr_audit WHERE action = 'erasure'") == 1


def test_an_erasure_answered_no_says_so_and_erases_nothing(
    cli_env: dict[str, str], owner_url: str, db_url: str
) -> None:
    """Declined, the command says what happened in its own words (not click's bare "Aborted!")
    and exits 1: a script must not read it as done."""
    subject = str(uuid.uuid4())
    assert run(cli_env, "schema", "publish", str(EXAMPLES / "itsailor.yaml"))[0] == 0
    fetchval(
        owner_url,
        "INSERT INTO consent_events (event_id, property, subject_id, event_type, schema_version,"
        " choices, effective, gpc, dnt, signals_applied, recorded_at, identity, leaf) VALUES"
        f" (gen_random_uuid(), 'itsailor', '{subject}', 'accept-all', 1, '{{}}', '{{}}', false,"
        " false, '[]', now(), sha256('identity'::bytea), sha256('leaf'::bytea)) RETURNING 1",
    )
    declined = CliRunner().invoke(
        app, ["dsr", "erase", "--subject-id", subject], env=cli_env, input="n\n"
    )
    assert declined.exit_code == 1
    assert "delete 1 event(s) matching this request?" in declined.stderr
    assert declined.stderr.endswith("erasure not confirmed: nothing erased\n")
    assert "Aborted" not in declined.output
    assert fetchval(db_url, "SELECT count(*) FROM consent_events") == 1
    assert fetchval(db_url, "SELECT count(*) FROM dsr_audit WHERE action = 'erasure'") == 0

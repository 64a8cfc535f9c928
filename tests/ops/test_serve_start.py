"""`serve` that cannot start says why in one `error:` line on stderr and exits non-zero, with one
worker or several (README, "CLI"): a port in use and a role CONSENT_REQUIRE_LEAST_PRIVILEGE
refuses are found before the server starts (exit 1); an app that fails in its workers is exit 3,
never 0, which a supervisor (systemd, compose) would read as a clean stop."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import ROOT, free_port, service_env

STARTED_WITH = "import sys, service.cli as cli; cli.APP_FACTORY = sys.argv.pop(1); cli.app()"


def serve(env: dict[str, str], *args: str, app: str | None = None) -> tuple[int, str, str]:
    command = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", *args]
    if app is not None:  # the same command, serving another app factory
        command = [sys.executable, "-c", STARTED_WITH, app, "serve", "--host", "127.0.0.1", *args]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_one_line_before_anything_starts(db_url: str, workers: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code, _, stderr = serve(service_env(db_url), "--port", str(port), "--workers", workers)
    assert code == 1, stderr
    assert stderr == f"error: cannot listen on 127.0.0.1:{port}: Address already in use\n"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_role_least_privilege_refuses_is_one_line(owner_url: str, workers: str) -> None:
    env = service_env(owner_url, require_least_privilege="true")
    code, _, stderr = serve(env, "--port", str(free_port()), "--workers", workers)
    assert code == 1, stderr
    assert stderr.startswith("error: the service connects to PostgreSQL as a role that is "), stderr
    assert stderr.count("\n") == 1, stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_app_that_fails_to_start_is_exit_3_and_says_so(db_url: str, workers: str) -> None:
    code, stdout, stderr = serve(
        service_env(db_url),
        "--port", str(free_port()), "--workers", workers,
        app="tests.ops.failing_app:create_app",
    )  # fmt: skip
    assert code == 3, (stdout[-2000:], stderr)
    assert stderr.endswith("error: the service did not start: the log above says why\n"), stderr
    assert "this app refuses to start" in stdout  # the log says why


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_dev_key_file_that_holds_no_key_is_one_line_before_workers_start(
    db_url: str, tmp_path: Path, workers: str
) -> None:
    """A receipt key file that is not a key was a traceback in the log and exit 3; an empty IP-hash
    key file was used as an empty HMAC key. Both are checked before the workers start."""
    for name, content in (("receipt.key", "garbage\n"), ("ip-hash.key", "")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / name).write_text(content)
        env = service_env(db_url, env="dev", data_dir=str(folder), ip_hash_salt="", receipt_key="")
        code, _, stderr = serve(env, "--port", str(free_port()), "--workers", workers)
        assert code == 2, stderr
        assert stderr.startswith(f"error: {folder / name} does not hold a key ("), stderr
        assert stderr.count("\n") == 1, stderr

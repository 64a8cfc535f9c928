"""Logs: JSON lines for whatever collects them; in dev mode at a terminal, lines for a person."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.core.config import Environment
from service.core.logging import ACCESS_LOG, configure_logging, get_logger, readable_logs
from service.core.migrations import head_revision
from tests.conftest import make_settings


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    configure_logging("INFO")


@pytest.mark.usefixtures("restore_logging")
def test_human_lines_at_a_terminal_and_json_otherwise() -> None:
    human = io.StringIO()
    configure_logging("INFO", human, human=True)
    get_logger("service.test").info("published", property="itsailor")
    ACCESS_LOG.request("0123abcd", "GET", "/healthz", 200, 1.5)
    ACCESS_LOG.request("0123abcd", "GET", "/healthz", 200, 1.5)  # flushed later: read the buffer
    lines = human.getvalue().splitlines()
    assert "published" in lines[0]
    assert "property=itsailor" in lines[0]
    assert lines[1].endswith("GET /healthz 200 1.5 ms [0123abcd]")
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])

    machine = io.StringIO()
    configure_logging("INFO", machine)
    get_logger("service.test").info("published", property="itsailor")
    assert json.loads(machine.getvalue().splitlines()[0])["property"] == "itsailor"


def test_readable_only_in_dev_at_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev = make_settings("postgresql://x@localhost/x", tmp_path)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert readable_logs(dev) is True
    assert readable_logs(dev.model_copy(update={"env": Environment.PRODUCTION})) is False
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert readable_logs(dev) is False


def test_a_start_logs_no_alembic_plugin_lines() -> None:
    """Alembic says "setup plugin …" seven times when it is first imported; a start must not."""
    program = (
        "from service.core.logging import configure_logging; configure_logging('INFO'); "
        "from service.core.migrations import head_revision; print(head_revision())"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip().splitlines() == [head_revision()]
    assert "plugin" not in done.stderr


@pytest.mark.usefixtures("restore_logging")
def test_uvicorns_access_log_is_not_even_built() -> None:
    """uvicorn writes its access line (with the client's address) only when its logger has a
    handler to reach (`hasHandlers()`, read by its protocol); with none it never builds the line,
    which cost 3 µs a request. uvicorn's other lines still reach the service's handler."""
    stream = io.StringIO()
    configure_logging("INFO", stream)
    access = logging.getLogger("uvicorn.access")
    assert not access.hasHandlers()
    access.info('%s - "%s %s HTTP/%s" %d', "203.0.113.9", "POST", "/x", "1.1", 201)
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    assert "203.0.113.9" not in stream.getvalue()
    assert "Application startup complete." in stream.getvalue()

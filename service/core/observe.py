"""Per-request observation: request id, access log line and Prometheus metrics.

A pure ASGI middleware (no I/O, no buffering of bodies). Paths are logged and labelled by their
route template (`/v1/properties/{property}/consents/{subject_id}`), never the raw path, so no
identifier reaches a log or a metric label; the client address is never read here.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import time
from typing import Any

import structlog
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.errors import internal_error_response, log_unexpected
from service.core.logging import ACCESS_LOG

REQUESTS = Counter(
    "consent_http_requests_total",
    "HTTP requests by method, route template and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "consent_http_request_duration_seconds",
    "HTTP request latency by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"


class ObserveMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        supplied = _header(scope, b"x-request-id")
        request_id = supplied if supplied and _acceptable_id(supplied) else os.urandom(16).hex()
        # Each request runs in a task of its own, with its own copy of the context: binding is
        # enough, nothing of an earlier request is left to clear.
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Rendered here rather than by Starlette's outermost handler, so even a 500 carries the
            # request id header that lets an operator find the traceback in the logs.
            log_unexpected(exc)
            if response_started:
                raise
            await internal_error_response()(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            method = scope["method"]
            counter, histogram = _series(method, route, status)
            counter.inc()
            histogram.observe(elapsed)
            ACCESS_LOG.request(request_id, method, route, status, round(elapsed * 1000, 2))


@functools.cache
def _series(method: str, route: str, status: int) -> tuple[Any, Any]:
    """The metric children of one (method, route template, status): a handful in all, looked up
    once each instead of on every request."""
    return REQUESTS.labels(method, route, str(status)), LATENCY.labels(method, route)


def _acceptable_id(value: str) -> bool:
    """A caller's request id is kept when it is short, plain text and not an IP address (which a
    proxy might copy into it: it would then be logged on every line)."""
    if not _REQUEST_ID.match(value):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return True
    return False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None

"""Per-request observation: request id, access log line and Prometheus metrics.

A pure ASGI middleware (no I/O, no buffering of bodies). Paths are logged and labelled by their
route template (`/v1/properties/{property}/consents/{subject_id}`), never the raw path, so no
identifier reaches a log or a metric label; the client address is never read here.
"""

from __future__ import annotations

import bisect
import os
import re
import time
from collections.abc import Iterable

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest, multiprocess
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.errors import (
    BadRequest,
    internal_error_response,
    log_unexpected,
    problem_response,
)
from service.core.logging import ACCESS_LOG, Deferred

REQUESTS = Counter(
    "consent_http_requests",
    "HTTP requests by method, route template and status.",
    ["method", "route", "status"],
)
LATENCY_NAME = "consent_http_request_duration_seconds"
LATENCY_HELP = "HTTP request latency by method and route template."
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# The latency histogram is kept as two counters, added to once per flush (a histogram can only be
# observed one request at a time), and shown as the histogram it is by `exposition`.
_LATENCY_BUCKET = Counter(
    "consent_internal_latency_bucket", "Requests per latency bucket", ["method", "route", "le"]
)
_LATENCY_SUM = Counter("consent_internal_latency_sum", "Latency sum", ["method", "route"])
_BOUNDS = [*(str(bound) for bound in LATENCY_BUCKETS), "+Inf"]


class RequestMetrics:
    """Request counts and latencies, gathered in this process and added to the Prometheus
    values at most FLUSH_DELAY later (and whenever /metrics is read). With several workers each
    Prometheus update is a locked write to a shared file (~3 µs); here a request costs a few
    dictionary updates, and a flush a few writes per route."""

    FLUSH_DELAY = 0.5

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, int], int] = {}
        # Per (method, route): how many fell in each bucket (the last is +Inf), and their sum.
        self._buckets: dict[tuple[str, str], list[int]] = {}
        self._sums: dict[tuple[str, str], float] = {}
        self._flush_soon = Deferred(self.flush, self.FLUSH_DELAY).soon

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self._counts[key] = self._counts.get(key, 0) + 1
        series = (method, route)
        buckets = self._buckets.get(series)
        if buckets is None:
            buckets = self._buckets[series] = [0] * (len(LATENCY_BUCKETS) + 1)
            self._sums[series] = 0.0
        buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self._sums[series] += seconds
        self._flush_soon()

    def flush(self) -> None:
        counts, self._counts = self._counts, {}
        buckets, self._buckets = self._buckets, {}
        sums, self._sums = self._sums, {}
        for (method, route, status), count in counts.items():
            REQUESTS.labels(method, route, str(status)).inc(count)
        for (method, route), per_bucket in buckets.items():
            for bound, count in zip(_BOUNDS, per_bucket, strict=True):
                if count:
                    _LATENCY_BUCKET.labels(method, route, bound).inc(count)
            _LATENCY_SUM.labels(method, route).inc(sums[(method, route)])


class _LatencyHistogram(Collector):
    """Everything `source` collects, with the two latency counters shown as one histogram."""

    def __init__(self, source: Collector) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        counts: dict[tuple[str, str], dict[str, float]] = {}
        sums: dict[tuple[str, str], float] = {}
        for metric in self._source.collect():
            if metric.name == "consent_internal_latency_bucket":
                for sample in metric.samples:
                    if sample.name.endswith("_total"):
                        series = (sample.labels["method"], sample.labels["route"])
                        counts.setdefault(series, {})[sample.labels["le"]] = sample.value
            elif metric.name == "consent_internal_latency_sum":
                for sample in metric.samples:
                    if sample.name.endswith("_total"):
                        sums[(sample.labels["method"], sample.labels["route"])] = sample.value
            else:
                yield metric
        histogram = HistogramMetricFamily(LATENCY_NAME, LATENCY_HELP, labels=["method", "route"])
        for series, per_bound in sorted(counts.items()):
            cumulative, buckets = 0.0, []
            for bound in _BOUNDS:
                cumulative += per_bound.get(bound, 0.0)
                buckets.append((bound, cumulative))
            histogram.add_metric(list(series), buckets, sum_value=sums.get(series, 0.0))
        yield histogram


def exposition() -> bytes:
    """The Prometheus text of this process, or, with several workers, of all of them (each
    writes to files in PROMETHEUS_MULTIPROC_DIR)."""
    REQUEST_METRICS.flush()  # this process's latest requests, not only those already flushed
    source: Collector = REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        source = CollectorRegistry()
        multiprocess.MultiProcessCollector(source)  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    registry.register(_LatencyHistogram(source))
    return generate_latest(registry)


REQUEST_METRICS = RequestMetrics()

# A caller's request id is kept only in the two forms ids take (a UUID, or 32 hex digits as ours):
# anything freer could carry an address or an identifier into every log line and the audit trail.
_REQUEST_ID = re.compile(
    r"^(?:[0-9a-fA-F]{32}|[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12})$"
)
CLIENT_CLOSED = 499  # the client went away before an answer (nginx's code; not counted as 500)
# Set in a request's scope when the HTTP server refused its body (malformed mid-way) after its
# route was read: the status the client got, which the request is counted and logged with.
REFUSED_STATUS = "consent.refused_status"


def encoded_slash(scope: Scope) -> bool:
    """The path, as sent, holds `%2F`. The server decodes the path before routing, so
    `/v1/properties/itsailor%2Fschema` would be served as `/v1/properties/itsailor/schema`: a
    request whose logged route is not the resource its sender named. No route of the service
    takes a slash inside a segment, so such a path is refused, by ASGI and the raw path alike."""
    raw = scope.get("raw_path")
    return raw is not None and b"%2" in raw and (b"%2F" in raw or b"%2f" in raw)


ENCODED_SLASH_DETAIL = "the path holds an encoded slash (%2F), which no route of this service takes"


def route_template(scope: Scope) -> str:
    """The matched route's path template; `<unmatched>` when no route matched (a 404)."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    # Starlette's own routes (the docs pages, their assets) name only their endpoint.
    endpoint = scope.get("endpoint")
    if endpoint is not None:
        for route in getattr(scope.get("app"), "routes", ()):
            if endpoint in (getattr(route, "endpoint", None), getattr(route, "app", None)):
                return str(route.path)
    return "<unmatched>"


def request_id_of(scope: Scope) -> str:
    """The caller's `X-Request-ID` when it is one of the two forms ids take, else a new id; bound
    to every log line of the request. Each request runs in a task of its own, with its own copy of
    the context: binding is enough, nothing of an earlier request is left to clear."""
    supplied = _header(scope, b"x-request-id")
    request_id = supplied if supplied and _REQUEST_ID.match(supplied) else os.urandom(16).hex()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    return request_id


def id_headers(request_id: str) -> list[tuple[bytes, bytes]]:
    """The headers every answer ends with."""
    return [(b"x-request-id", request_id.encode()), (b"x-content-type-options", b"nosniff")]


def observed(scope: Scope, request_id: str, status: int, started: float) -> None:
    """A request is over: its metrics and its access line."""
    elapsed = time.perf_counter() - started
    status = scope.get(REFUSED_STATUS, status)
    route = route_template(scope)
    method = scope["method"]
    REQUEST_METRICS.observe(method, route, status, elapsed)
    ACCESS_LOG.request(request_id, method, route, status, round(elapsed * 1000, 2))


class ObserveMiddleware:
    """The outermost middleware. A hot route served by the HTTP server itself does the same
    through the same functions (core/raw_path.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = request_id_of(scope)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *id_headers(request_id)]
            await send(message)

        try:
            if encoded_slash(scope):
                refusal = problem_response(
                    status=BadRequest.status, slug=BadRequest.slug, title=BadRequest.title,
                    detail=ENCODED_SLASH_DETAIL,
                )  # fmt: skip
                await refusal(scope, receive, send_with_id)
                return
            await self.app(scope, receive, send_with_id)
            if not response_started:
                status = CLIENT_CLOSED
        except ClientDisconnect:
            status = CLIENT_CLOSED
        except Exception as exc:
            # Rendered here rather than by Starlette's outermost handler, so even a 500 carries the
            # request id header that lets an operator find the traceback in the logs.
            log_unexpected(exc)
            if response_started:
                raise
            await internal_error_response()(scope, receive, send_with_id)
        finally:
            observed(scope, request_id, status, started)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None

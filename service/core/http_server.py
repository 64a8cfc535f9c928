"""The HTTP/1.1 server protocol: uvicorn's httptools protocol, with a cap on the request head and
problem documents for what the server itself refuses, and a response's head and body sent in
one write.

httptools has no limit of its own on a request line and headers: a client could send megabytes of
header before the app sees anything, and they would be held in memory (a 30 MB header was
answered 200). Here a head past MAX_HEAD_BYTES is answered 431 and the connection closed, before
the app is called (the head held is at most that plus one read). uvicorn's own "Invalid HTTP
request" 400 is sent as problem+json, like every other error. The count costs an addition per
header. Either refusal waits for the answers to the requests pipelined before it on the
connection (uvicorn wrote its 400 at once, where a client reads it as the answer to the request in
flight: an event stored and acknowledged 201 in the log, read as refused by its sender); a
malformed body of the request being served is refused at once, that request told its client is
gone. The rough count of a head still arriving (the bytes read since it began) leaves out what
the read it began in held of the requests before it.

uvicorn writes a response's head (at `http.response.start`) and its body (at
`http.response.body`) with two `transport.write` calls: two `send` system calls and two TCP
segments per response, about a tenth of a worker's CPU per consent event. `OneWrite` holds the
head until the body's first write and sends both together (docs/architecture.md, "One write per
response").
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any, cast

import orjson
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from service.core.errors import PROBLEM_BASE, PROBLEM_MEDIA_TYPE
from service.core.logging import get_logger
from service.core.observe import REFUSED_STATUS, REQUEST_METRICS

log = get_logger("service.http")

# nginx's default for a request head (4 buffers of 8 KiB); browsers send 1 to 4 KiB.
MAX_HEAD_BYTES = 32 * 1024
# A request line's method, spaces and version, and the head's CRLFs, which the count leaves out.
REQUEST_LINE_ALLOWANCE = 64
# How long a request's head may take from its first byte, a body may pause, or a new connection
# may send nothing (nginx's client_header_timeout and client_body_timeout are 60 s; a banner's
# head and body arrive in one packet). uvicorn times out only a connection idle after an answer:
# one that sent nothing, half a head, or part of a body stayed open for good, and a client could
# hold every file descriptor a worker has (reviews of 2026-12-01).
HEAD_SECONDS = 20.0


def problem_bytes(
    request_id: str, status: int, reason: str, slug: str, title: str, detail: str
) -> bytes:
    """A complete HTTP response carrying a problem document, closing the connection. Like every
    other error it names its request id (`instance` and `X-Request-ID`)."""
    body = orjson.dumps(
        {
            "type": PROBLEM_BASE + slug,
            "title": title,
            "status": status,
            "detail": detail,
            "instance": f"urn:request:{request_id}",
        }
    )
    head = (
        f"HTTP/1.1 {status} {reason}\r\ndate: {formatdate(usegmt=True)}\r\n"
        f"content-type: {PROBLEM_MEDIA_TYPE}\r\ncontent-length: {len(body)}\r\n"
        f"x-request-id: {request_id}\r\nx-content-type-options: nosniff\r\n"
        "cache-control: no-store\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


# What the protocol itself refuses, before the app is called: status, reason, slug, title, detail.
# The labels of a request the HTTP server refused before any route could be read.
REFUSED_METHOD = "-"
REFUSED_ROUTE = "<refused>"
REFUSALS = {
    431: (
        "Request Header Fields Too Large",
        "header-too-large",
        "Request header fields too large",
        f"the request line and headers are at most {MAX_HEAD_BYTES} bytes",
    ),
    400: ("Bad Request", "bad-request", "Bad request", "the request is not valid HTTP/1.1"),
    408: (
        "Request Timeout",
        "request-timeout",
        "Request timeout",
        f"the request line and headers must arrive within {HEAD_SECONDS:g} seconds",
    ),
    501: (
        "Not Implemented",
        "transfer-coding-not-supported",
        "Transfer coding not supported",
        "a body is sent with Content-Length or Transfer-Encoding: chunked, and no other coding",
    ),
}


class HeadTooLarge(Exception):
    pass


class UnsupportedTransferCoding(Exception):
    """A Transfer-Encoding other than `chunked` (RFC 9112, section 6.1: a server that does not
    understand a coding answers 501): the parser would take the body as if unencoded."""


class OneWrite:
    """A response cycle's view of the connection: its head is held until the first body write,
    then both leave in one write. A `100 Continue` interim response and everything after the
    first body write pass straight through; closing sends what is held first. A response to
    HEAD (no body write follows) is not held."""

    __slots__ = ("_held", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 1"):
            self._held = data
        else:
            self._transport.write(data)

    def close(self) -> None:
        if self._held is not None:
            self._transport.write(self._held)
            self._held = None
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info…
        return getattr(self._transport, name)


def _closing_if_unasked(cycle: RequestResponseCycle) -> Callable[[Any], Awaitable[None]]:
    """The `send` of a request that expects `100 Continue` (through ASGI: the raw path does the
    same in its own write). Answered before its body was asked for, with none of it come, the
    connection closes after the answer: the client will not send the body, and the parser would
    read its next request as that body."""
    send = cycle.send

    async def send_closing_if_unasked(message: Any) -> None:
        if cycle.waiting_for_100_continue and cycle.more_body and not cycle.body:
            cycle.keep_alive = False
        await send(message)

    return send_closing_if_unasked


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Counts a request's head twice: exactly, from the request line and each header as the
    parser completes them; and roughly, by the bytes read while the head is still incomplete
    (httptools holds a header until its end arrives, so a single endless header is only seen
    this way)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._read_in_head = 0
        self._refused = False
        self._unsupported_coding = False
        self._refusal: int | None = None  # a refusal waiting for the answers before it
        self._in_body = False  # between a request's head and its end
        self._read_earlier = 0  # bytes of the current read that were earlier requests'
        self._before: RequestResponseCycle | None = None  # the request before the latest one
        self._served_raw: RequestResponseCycle | None = None  # just handed to the raw path
        # A head is awaited from the connection's start, then from the first byte after an answer
        # (or a pipelined request's first byte), until it is complete: since when. A body, from
        # the head or its last piece. One timer a connection looks now and then (a timer for
        # each request would cost every request its making and cancelling).
        self._head_since: float | None = None
        self._head_begun = False  # a byte has come since the last answer (or of the next request)
        self._body_since = 0.0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_since = self.loop.time()
        self._head_timer = self.loop.call_later(HEAD_SECONDS, self._look_at_head)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _look_at_head(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._refused:
            return
        now, cycle = self.loop.time(), self.cycle
        if self._head_since is not None:
            due = self._head_since + HEAD_SECONDS
            if now >= due:
                if self._head_begun:
                    self._refuse(408)  # after the answers to the requests before it, as any
                elif cycle is None or cycle.response_complete:
                    self.transport.close()  # nothing asked: nothing to answer
                return
        elif (
            self._in_body
            and cycle is not None
            and not cycle.response_complete
            and not cycle.waiting_for_100_continue  # the app has not asked for it yet
        ):
            due = self._body_since + HEAD_SECONDS
            if now >= due:
                self._refuse(408)  # the request told its client is gone
                return
        else:
            due = now + HEAD_SECONDS
        self._head_timer = self.loop.call_later(due - now, self._look_at_head)

    def on_message_begin(self) -> None:
        if not self._head_begun:
            self._head_begun = True
            self._head_since = self.loop.time()
        self._in_head = True
        self._in_body = False
        self._head_bytes = 0
        # What this read held before the request's first byte was earlier requests' (roughly:
        # their heads as counted, their bodies, a request line's allowance), not this head's.
        self._read_in_head = -self._read_earlier
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        if (
            len(name) == 17
            and name.lower() == b"transfer-encoding"
            and value.replace(b" ", b"").replace(b"\t", b"").lower() != b"chunked"
        ):
            self._unsupported_coding = True
            raise UnsupportedTransferCoding  # the parser stops; uvicorn calls send_400_response
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_since = None
        self._head_begun = False
        self._body_since = self.loop.time()
        self._in_head = False
        previous = self.cycle
        super().on_headers_complete()  # may raise (a URL httptools cannot split): a bad head
        cycle = self.cycle
        if cycle is not previous:  # a request was made of this head: its body comes next
            self._in_body = True
            self._before = previous
        served_raw, self._served_raw = self._served_raw, None  # it writes in one write itself
        fresh = cycle is not previous and cycle is not None and cycle is not served_raw
        if fresh and self.scope["method"] != "HEAD":
            cycle.transport = OneWrite(self.transport)  # type: ignore[assignment]
        if fresh and cycle.waiting_for_100_continue:
            cycle.send = _closing_if_unasked(cycle)  # type: ignore[method-assign,assignment]

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        # A hot route is served below ASGI, by the app's own route (core/raw_path.py); anything
        # else, and a 503 for too many requests at once (`app` is then uvicorn's), through ASGI.
        raw = getattr(getattr(app, "middleware_stack", None), "raw", None)
        route = raw.route_for(cycle.scope) if raw is not None else None
        if raw is None or route is None:
            super()._start_asgi_task(cycle, app)
            return
        serve = raw.serve(cycle, route, self.transport.write)
        if self.config.reset_contextvars:  # as uvicorn's own task (an opt-in of its config)
            task = self.loop.create_task(serve, context=contextvars.Context())
        else:
            task = self.loop.create_task(serve)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        self._served_raw = cycle

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise HeadTooLarge  # the parser stops; uvicorn calls send_400_response

    def data_received(self, data: bytes) -> None:
        if self._refused:  # the connection is closing
            return
        if not self._head_begun and (self.cycle is None or self.cycle.response_complete):
            # The first byte after an answer (even a bare CRLF, which the parser skips without
            # beginning a request; uvicorn stops its keep-alive timer at any byte).
            self._head_begun = True
            self._head_since = self.loop.time()
        self._read_earlier = 0
        super().data_received(data)
        if self._in_head and not self._refused:
            self._read_in_head += len(data)
            if self._read_in_head > MAX_HEAD_BYTES:
                self._refuse(431)

    def _unsupported_upgrade_warning(self) -> None:
        # An `Upgrade` request is served as plain HTTP: the service has no WebSocket route and
        # serves no WebSocket protocol (`ws="none"`, docs/guarantees.md, "No raw IP address is
        # stored or logged"). uvicorn would log two warnings a request for it, advice to install
        # a WebSocket library included: any client could fill the log with them.
        pass

    def send_400_response(self, msg: str) -> None:
        too_large = self._head_bytes > MAX_HEAD_BYTES
        self._refuse(431 if too_large else 501 if self._unsupported_coding else 400)

    def on_body(self, body: bytes) -> None:
        self._body_since = self.loop.time()
        self._read_earlier += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._read_earlier += self._head_bytes + REQUEST_LINE_ALLOWANCE
        super().on_message_complete()

    def _refuse(self, status: int) -> None:
        # Nothing more is read. Requests before the refused one (pipelined on the connection) are
        # answered first, in order: the refusal written now would be read as their answer.
        self._refused = True
        cycle = self.cycle
        if self._in_body and cycle is not None and not cycle.response_complete:
            # A malformed body: of a request waiting its turn, which is dropped (refused after
            # the answers before it, the request before it now the latest), or of the request
            # being served, whose body will never arrive whole: told its client is gone, and
            # refused now.
            if self.pipeline and self.pipeline[0][0] is cycle:
                self.pipeline.popleft()
                cycle.response_complete = True
                self.cycle = cycle = self._before  # type: ignore[assignment]
            else:
                # Counted once, under its route, with the status it got (core/observe.py).
                cast("dict[str, object]", cycle.scope)[REFUSED_STATUS] = status
                cycle.disconnected = True
                cycle.message_event.set()
                self._send_refusal(status, counted=False)
                return
        # Every request before this one is answered in order, the latest last.
        if cycle is not None and not cycle.response_complete:
            self._refusal = status
            return
        self._send_refusal(status)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._refusal is None or self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # the last before the refused
            self._unset_keepalive_if_required()
            self._send_refusal(self._refusal)

    def _send_refusal(self, status: int, *, counted: bool = True) -> None:
        # The app never sees this request, so the id its answer names is made here, and logged:
        # the one line an operator can find it by.
        request_id = os.urandom(16).hex()
        self._refusal = None
        self.transport.write(problem_bytes(request_id, status, *REFUSALS[status]))
        self.transport.close()
        log.warning("request_refused", request_id=request_id, status=status)
        # Counted like any answer, under a route of its own: no route was read (README, API).
        if counted:
            REQUEST_METRICS.observe(REFUSED_METHOD, REFUSED_ROUTE, status, 0.0)

"""The hot routes served by the HTTP server itself, without ASGI (docs/architecture.md, "The hot
routes below ASGI").

Through ASGI, a request to a hot route passes uvicorn's cycle task, Starlette's and FastAPI's
`__call__`, the dispatch, two middlewares that each wrap `send`, the exception layer, and the
`Response`'s own ASGI call, whose two messages go back through both wrappers to uvicorn, which
checks and writes each header: about 5 % of a consent event's instructions in a worker
(measured in docs/architecture.md). Here the server's protocol (core/http_server.py) hands a
request for a hot route to `RawServer.serve` instead, which does what those layers do, by the same
functions, and writes the answer in one write:

- the route is the dispatch's own `FastRoute` (its matcher, its parameters, its dependencies, the
  endpoint), reading the body through the server's own `receive` (100-continue, flow control,
  a disconnect: all as through ASGI);
- the request id, the access line and the metrics are `core/observe.py`'s, an error's answer is
  the app's exception handler's, an unexpected one is logged and answered 500 as the
  outermost middleware does;
- CORS headers are added by the app's `CORSMiddleware` itself (its `send`, given the head).

The server writes the head as uvicorn would: its default headers (the date) first, the answer's,
then the id headers; `connection: close` when the connection is not kept alive. Built only when the
app's middleware is exactly what this module reproduces (`ObserveMiddleware`, and the CORS
middleware or none): another middleware turns the raw path off, so it can never be skipped.
HEAD, and everything else, goes through ASGI.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Message, Scope
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle

from service.core.errors import internal_error_response, log_unexpected
from service.core.observe import (
    CLIENT_CLOSED,
    ObserveMiddleware,
    encoded_slash,
    id_headers,
    observed,
    request_id_of,
)

RAW_METHODS = frozenset({"GET", "POST"})
# uvicorn's answer when the app fails or is cancelled before answering (`send_500_response`),
# after the status line and the server's default headers.
UVICORN_500 = (
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\nconnection: close\r\n"
    b"\r\nInternal Server Error"
)


class RawServer:
    """The app's hot routes, as the HTTP server serves them (see the module docstring)."""

    def __init__(
        self,
        app: Any,
        routes: tuple[Any, ...],  # pipeline.FastRoute (pipeline imports this module)
        handlers: dict[Any, Any],
        cors: CORSMiddleware | None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.handlers = handlers
        self.cors = cors

    def route_for(self, scope: Scope) -> Any:
        """The hot route that serves this request, or None (ASGI serves it)."""
        if scope["method"] not in RAW_METHODS or encoded_slash(scope):
            return None  # ASGI answers it (ObserveMiddleware refuses an encoded slash)
        try:
            for route in self.routes:
                if route.matches(scope) is Match.FULL:
                    return route
        except Exception:  # the protocol's callback must not fail: ASGI answers instead
            return None
        return None

    async def serve(self, cycle: RequestResponseCycle, route: Any, write: Any) -> None:
        """Answer the request of `cycle` with `route`; `write` is the connection's."""
        scope: Scope = cycle.scope  # type: ignore[assignment]  # uvicorn's TypedDict; one dict
        scope["app"] = self.app  # as FastAPI's and Starlette's `__call__` set them
        if self.app.root_path:
            scope["root_path"] = self.app.root_path
        request_id = request_id_of(scope)
        started = time.perf_counter()
        status = 500
        try:
            try:
                request = Request(scope, cycle.receive)  # type: ignore[arg-type]
                try:
                    response = await route(request)
                except ClientDisconnect:
                    status = CLIENT_CLOSED  # gone before its request was read: nobody to answer
                    return
                except Exception as exc:
                    response = await self._answer_to(request, exc)
                status = response.status_code
                head = [*response.raw_headers]
                if self.cors is not None:  # with or without an Origin (`Vary: Origin`)
                    head = await self._with_cors(scope, status, head)
                head += id_headers(request_id)
                if not await _write(cycle, write, status, head, response.body):
                    status = CLIENT_CLOSED  # the answer had nobody to go to
                if response.background is not None:
                    await response.background()
            except Exception as exc:
                # Unexpected, or in an exception handler: as ObserveMiddleware, outside the CORS
                # middleware (no CORS headers), logged with its traceback, answered with the id.
                log_unexpected(exc)
                if cycle.response_started:
                    cycle.transport.close()
                else:
                    status = 500
                    answer = internal_error_response()
                    head = [*answer.raw_headers, *id_headers(request_id)]
                    if not await _write(cycle, write, status, head, answer.body):
                        status = CLIENT_CLOSED
        except BaseException:
            # Cancelled (a shutdown's grace period over), wherever it was: as uvicorn's cycle, a
            # plain 500 that closes the connection, then the cancellation goes on.
            if not cycle.response_started and not cycle.disconnected:
                status = 500
                cycle.response_started = True
                defaults = (name + b": " + value + b"\r\n" for name, value in cycle.default_headers)
                write(b"".join((STATUS_LINE[500], *defaults, UVICORN_500)))
                cycle.transport.close()
            raise
        finally:
            observed(scope, request_id, status, started)
            cycle.on_response = lambda: None  # as uvicorn's cycle ends

    async def _answer_to(self, request: Request, exc: Exception) -> Response:
        """The app's exception handler's answer; re-raised when it has none."""
        handler = handler_for(self.handlers, exc)
        if handler is None:
            raise exc
        answer = handler(request, exc)
        return await answer if inspect.isawaitable(answer) else answer  # type: ignore[no-any-return]

    async def _with_cors(
        self, scope: Scope, status: int, head: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        assert self.cors is not None
        message: Message = {"type": "http.response.start", "status": status, "headers": head}
        sent: list[Message] = []

        async def keep(message: Message) -> None:
            sent.append(message)

        await self.cors.send(message, send=keep, request_headers=Headers(scope=scope))
        return list(sent[0]["headers"])


def handler_for(handlers: dict[Any, Any], exc: Exception) -> Any:
    """The app's exception handler for `exc` (the nearest of its classes), or None."""
    for kind in type(exc).__mro__:
        if kind in handlers:
            return handlers[kind]
    return None


def raw_server_for(app: Any, routes: tuple[Any, ...], layers: list[Any]) -> RawServer | None:
    """The server serves hot routes itself only when it does all the middleware does (innermost
    first in `layers`): ObserveMiddleware outermost, within it at most one CORS middleware whose
    simple requests are Starlette's own (`RawServer` gives its `send` the head)."""
    *inner, outer = layers or [None]
    if type(outer) is not ObserveMiddleware or len(inner) > 1:
        return None
    cors = inner[0] if inner else None
    if cors is not None and not (
        isinstance(cors, CORSMiddleware)
        and all(
            getattr(type(cors), name) is getattr(CORSMiddleware, name)
            for name in ("__call__", "simple_response", "send")
        )
    ):
        return None
    return RawServer(app, routes, app.exception_handlers, cors)


async def _write(
    cycle: RequestResponseCycle,
    write: Any,
    status: int,
    head: list[tuple[bytes, bytes]],
    body: bytes | memoryview,
) -> bool:
    """The answer in one write, as uvicorn's `send` writes a head and a body; False when the
    client is gone."""
    if cycle.flow.write_paused and not cycle.disconnected:
        await cycle.flow.drain()
    if cycle.disconnected or cycle.transport.is_closing():
        return False  # as uvicorn's `send`: the answer has nobody to go to
    cycle.response_started = True
    if cycle.waiting_for_100_continue:
        # Answered before its body was asked for. A client that waits for the 100 will not send
        # it, and the parser would read its next request as that body: close after the answer.
        # One that sent its body anyway (RFC 9110 allows it) keeps its connection, the rest of
        # the body read and dropped, as for any answer given before its body was read.
        cycle.waiting_for_100_continue = False
        if cycle.more_body and not cycle.body:
            cycle.keep_alive = False
    parts = [STATUS_LINE[status]]
    for name, value in (*cycle.default_headers, *head):
        parts += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if status not in (204, 304):
        parts.append(bytes(body))
    write(b"".join(parts))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
    return True

"""Two floors under the control, for `bench/instructions.py --floors`: what answering an event's
POST costs with less and less framework, so the control's and the service's counts can be split
into the HTTP server, uvicorn's ASGI cycle, FastAPI, and the service's own work.

- `asgi`: a bare ASGI callable on uvicorn, with the control's server, flags and loop. It reads the
  body, parses nothing, and answers the control's 201 with a fixed body of the same size. What it
  costs is uvicorn's (httptools parsing, the scope, the request-response cycle and its task, the
  response head) plus a few lines of Python.
- `protocol`: the same answer from an asyncio protocol on uvloop that feeds httptools and writes
  the response itself: the HTTP/1.1 work no Python server can avoid (keep-alive only; a request
  with a body it must wait for is answered when the body has arrived).

    python -m bench.floors --port 8001     # the protocol floor
    uvicorn bench.floors:app --port 8001   # the ASGI floor

Neither checks anything: they are measuring sticks, never servers to deploy."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import httptools
import uvloop

# The control's answer to an event (bench/control_app.py `record`), with fixed values.
BODY = (
    b'{"event_id":"6f1c1a52-5d0e-4a8e-9d4b-2f3e1c0a9b87","subject_id":"0c9d7a3e-1b2f-4c5d-8e6f-'
    b'7a8b9c0d1e2f","property":"itsailor","event_type":"save-selection","schema_version":1,'
    b'"recorded_at":"2026-11-30T00:00:00.000000+00:00"}'
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI floor: 201 to a POST, 200 to anything else (the bench's readiness check)."""
    if scope["type"] != "http":  # lifespan: nothing to start
        message = await receive()
        while message["type"] != "lifespan.shutdown":
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            message = await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    status = 201 if scope["method"] == "POST" else 200
    await send({"type": "http.response.start", "status": status, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def _response(status: bytes) -> bytes:
    head = b"HTTP/1.1 " + status + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in HEADERS)
    return head + b"\r\n" + BODY


CREATED, OK = _response(b"201 Created"), _response(b"200 OK")


class FloorProtocol(asyncio.Protocol):
    """The protocol floor: httptools' callbacks, the headers kept as uvicorn keeps them, one
    write per response."""

    def connection_made(self, transport: Any) -> None:  # uvloop's, not an asyncio.Transport
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        post = self.parser.get_method() == b"POST"
        self.transport.write(CREATED if post else OK)
        self.headers = []
        self.body = bytearray()
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(FloorProtocol, host, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()

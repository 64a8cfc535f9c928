"""The server protocol `serve` runs: a request head past the cap is 431 and malformed HTTP is 400,
both as problem+json, before the app does any work; ordinary requests pass untouched, each
response in one write."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator, Callable
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import uvicorn

from service.app import create_app
from service.core import http_server
from service.core.config import Settings
from service.core.http_server import (
    MAX_HEAD_BYTES,
    REFUSED_METHOD,
    REFUSED_ROUTE,
    BoundedHttpToolsProtocol,
)
from service.core.observe import REQUEST_METRICS, REQUESTS

WRITES: list[bytes] = []


class Spy:
    """The connection's transport, recording every write."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        WRITES.append(data)
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class SpiedProtocol(BoundedHttpToolsProtocol):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.transport = Spy(self.transport)  # type: ignore[assignment]


@pytest.fixture
async def port(settings: Settings) -> AsyncIterator[int]:
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, http=SpiedProtocol,
        log_config=None, access_log=False, lifespan="on",
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
        await asyncio.sleep(0.02)
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    await task


async def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
    except ConnectionResetError:
        pass
    raw = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def get(header_bytes: int) -> bytes:
    return (
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Pad: "
        + b"a" * header_bytes
        + b"\r\n\r\n"
    )


def refused(status: int) -> float:
    """How many requests the HTTP server refused with `status` so far, in the metrics."""
    REQUEST_METRICS.flush()
    return float(REQUESTS.labels(REFUSED_METHOD, REFUSED_ROUTE, str(status))._value.get())


def assert_refusal(
    headers: dict[str, str], body: bytes, status: int, logs: io.StringIO, before: float
) -> dict[str, Any]:
    """A refusal is a problem like any other: its request id in `instance` and `X-Request-ID`,
    a `Date`, one log line naming the id, and one more in `consent_http_requests_total` (under
    route `<refused>`: they were invisible to monitoring)."""
    assert refused(status) == before + 1
    problem: dict[str, Any] = json.loads(body)
    assert headers["content-type"] == "application/problem+json"
    assert problem["status"] == status
    assert problem["instance"] == f"urn:request:{headers['x-request-id']}"
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
    assert parsedate_to_datetime(headers["date"]).tzinfo is not None
    [line] = [
        json.loads(line) for line in logs.getvalue().splitlines() if "request_refused" in line
    ]
    assert (line["request_id"], line["status"]) == (headers["x-request-id"], status)
    return problem


async def test_a_head_past_the_cap_is_431_problem(
    port: int, captured_logs_factory: Callable[[], io.StringIO]
) -> None:
    logs, before = captured_logs_factory(), refused(431)
    status, headers, body = await exchange(port, get(MAX_HEAD_BYTES + 4096))
    assert status == 431
    assert_refusal(headers, body, 431, logs, before)


async def test_a_head_within_the_cap_is_served(port: int) -> None:
    status, _, body = await exchange(port, get(MAX_HEAD_BYTES // 2))
    assert status == 200
    assert json.loads(body) == {"status": "ok"}


async def test_a_huge_head_is_refused_without_being_held(port: int) -> None:
    """Megabytes of header: the server answers and closes at the cap, without reading the rest
    (the client, still sending, may see the close as a reset before it reads the 431)."""
    try:
        status, _, _ = await exchange(port, get(20 * 1024 * 1024))
    except ConnectionResetError:
        status = 431
    assert status == 431
    assert (await exchange(port, get(100)))[0] == 200  # and it serves on


async def test_a_head_that_does_not_arrive_in_time_is_not_waited_for(
    port: int, monkeypatch: pytest.MonkeyPatch, captured_logs_factory: Callable[[], io.StringIO]
) -> None:
    """A connection that sends nothing is closed, and one that sends half a head gets a 408,
    after HEAD_SECONDS: uvicorn would hold both open for good. A head sent in pieces within the
    time is served."""
    monkeypatch.setattr(http_server, "HEAD_SECONDS", 0.5)
    silent = await asyncio.open_connection("127.0.0.1", port)
    logs, before = captured_logs_factory(), refused(408)
    partial = await asyncio.open_connection("127.0.0.1", port)
    partial[1].write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
    assert await asyncio.wait_for(silent[0].read(), timeout=5) == b""
    silent[1].close()
    raw = await asyncio.wait_for(partial[0].read(), timeout=5)
    partial[1].close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].split()[1] == "408"
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert assert_refusal(headers, body, 408, logs, before)["title"] == "Request timeout"

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(0.4)  # a preconnected socket: the time runs from the first byte
    for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: t\r\n", b"Connection: close\r\n\r\n"):
        writer.write(piece)
        await asyncio.sleep(0.1)  # the whole head within the time, not each piece
    assert (await asyncio.wait_for(reader.read(), timeout=5)).startswith(b"HTTP/1.1 200")
    writer.close()

    # A bare CRLF after an answer (the parser skips it; uvicorn's keep-alive timer stops at it).
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), timeout=5)
    writer.write(b"\r\n")
    assert b" 408 " in await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()

    # A body that stops coming: the request is told its client is gone, and refused.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/properties/itsailor/consent-events HTTP/1.1\r\nHost: t\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    assert b" 408 " in await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()


async def test_malformed_http_is_400_problem(
    port: int, captured_logs_factory: Callable[[], io.StringIO]
) -> None:
    logs, before = captured_logs_factory(), refused(400)
    status, headers, body = await exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
    assert status == 400
    assert assert_refusal(headers, body, 400, logs, before)["title"] == "Bad request"


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"gzip", b"br"])
async def test_a_transfer_coding_other_than_chunked_is_501_problem(
    port: int, captured_logs_factory: Callable[[], io.StringIO], coding: bytes
) -> None:
    """RFC 9112, section 6.1: the parser would read a gzip-coded body as if it were plain (a
    label the server ignores is evidence it did not read)."""
    logs, before = captured_logs_factory(), refused(501)
    body = b'{"a": 1}'
    request = (
        b"POST /v1/properties/itsailor/consent-events HTTP/1.1\r\nHost: t\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: " + coding + b"\r\n\r\n"
        + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    )  # fmt: skip
    status, headers, answer = await exchange(port, request)
    assert status == 501
    problem = assert_refusal(headers, answer, 501, logs, before)
    assert problem["detail"] == (
        "a body is sent with Content-Length or Transfer-Encoding: chunked, and no other coding"
    )


async def test_a_response_leaves_in_one_write(port: int) -> None:
    """Head and body together (one send, one TCP segment); a HEAD response and a 100 Continue
    are not held back."""
    WRITES.clear()
    status, _, body = await exchange(
        port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    [written] = WRITES
    assert written.startswith(b"HTTP/1.1 200 ")
    assert written.endswith(b'{"status":"ok"}')

    WRITES.clear()
    status, _, body = await exchange(
        port, b"HEAD /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    assert (status, body) == (200, b"")  # answered as its GET, head only
    assert len(WRITES) == 1

    WRITES.clear()
    request = (
        b"POST /v1/properties/itsailor/consent-events HTTP/1.1\r\nHost: t\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\n"
        b"Connection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    assert interim.startswith(b"HTTP/1.1 100 Continue")  # before the body was sent
    writer.write(b"{}")
    final = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    assert final.startswith(b"HTTP/1.1 4")
    assert WRITES[0].startswith(b"HTTP/1.1 100 Continue")
    assert len(WRITES) == 2


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /v1/properties/itsailor%2Fschema HTTP/1.1",  # would be served as the schema
        b"GET /v1/properties/itsailor%2fschema HTTP/1.1",
        b"POST /v1/properties/itsailor%2Fconsent-events HTTP/1.1",  # the raw path's route
        b"GET /healthz%2F HTTP/1.1",  # through ASGI
    ],
)
async def test_an_encoded_slash_in_the_path_is_refused_not_decoded(
    port: int, request_line: bytes
) -> None:
    """The server decodes the path before routing: `itsailor%2Fschema` was served as the schema
    of `itsailor`, and logged as that route. No route takes a slash inside a segment."""
    body = b"{}"
    request = (
        request_line + b"\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )  # fmt: skip
    status, headers, answer = await exchange(port, request)
    assert status == 400
    problem = json.loads(answer)
    assert headers["content-type"] == "application/problem+json"
    assert problem["detail"] == (
        "the path holds an encoded slash (%2F), which no route of this service takes"
    )
    assert problem["instance"] == f"urn:request:{headers['x-request-id']}"
    # Other escapes are decoded as before: `%68ealthz` is `healthz`.
    plain = b"GET /%68ealthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    assert (await exchange(port, plain))[0] == 200

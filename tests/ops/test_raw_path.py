"""The hot routes served by the HTTP server below ASGI (core/raw_path.py) answer exactly as through
ASGI: the same status, headers in the same order, body, access line and metrics, for every hot
route and every way a request to one can go (new, retried, refused, invalid, CORS, conditional,
100-continue, a failure inside), on a real server with the service's protocol. Each request is
sent twice on one server, once with the raw path and once with it switched off."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn

from service.app import create_app
from service.core.config import Settings
from service.core.http_server import REFUSED_METHOD, REFUSED_ROUTE, BoundedHttpToolsProtocol
from service.core.observe import REQUEST_METRICS, REQUESTS
from service.core.pipeline import ConsentAPI, Dispatch
from service.core.raw_path import RawServer
from tests.conftest import make_settings
from tests.factories import example, published

ORIGIN = "https://itsailor.io"
EVENTS = "/v1/properties/itsailor/consent-events"
SUBJECT = "0c9d7a3e-1b2f-4c5d-8e6f-7a8b9c0d1e2f"
# What differs between two answers to the same request: ids, times, receipts.
VARYING_KEYS = {"event_id", "recorded_at", "expires_at", "receipt", "receipt_proof", "instance"}
VARYING_HEADERS = {"date", "x-request-id", "content-length", "etag"}


@pytest.fixture
async def served(db_url: str, tmp_path: Any) -> AsyncIterator[tuple[ConsentAPI, int]]:
    async with serving(db_url, tmp_path) as (app, port, _):
        yield app, port


@asynccontextmanager
async def serving(
    db_url: str, tmp_path: Any, **options: Any
) -> AsyncIterator[tuple[ConsentAPI, int, uvicorn.Server]]:
    """The app on a real server with the service's protocol and `serve`'s options."""
    await published(db_url, example("itsailor"))
    settings: Settings = make_settings(
        db_url, tmp_path, cors_origins=[ORIGIN], trusted_proxies=["127.0.0.1/32"]
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, http=BoundedHttpToolsProtocol, ws="none",
        proxy_headers=False, log_config=None, access_log=False, lifespan="on", **options,
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
        await asyncio.sleep(0.02)
    try:
        yield app, server.servers[0].sockets[0].getsockname()[1], server
    finally:
        server.should_exit = True
        await task


def answered(status: int) -> float:
    """How many consent events were answered `status` so far, in the metrics."""
    REQUEST_METRICS.flush()
    series = REQUESTS.labels("POST", "/v1/properties/{property}/consent-events", str(status))
    return float(series._value.get())


def refused(status: int) -> float:
    """How many requests the HTTP server refused before reading a route, in the metrics."""
    REQUEST_METRICS.flush()
    return float(REQUESTS.labels(REFUSED_METHOD, REFUSED_ROUTE, str(status))._value.get())


def raw_server(app: ConsentAPI) -> RawServer:
    stack = app.middleware_stack
    assert isinstance(stack, Dispatch)
    assert stack.raw is not None
    return stack.raw


async def exchange(port: int, request: bytes, *, answers: int = 1) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    parts = re.split(rb"(?=HTTP/1\.1 \d{3} )", raw)
    found = [part for part in parts if part]
    assert len(found) == answers, raw
    return found


def post(body: bytes | str, *headers: str, path: str = EVENTS, close: bool = True) -> bytes:
    data = body.encode() if isinstance(body, str) else body
    lines = [f"POST {path} HTTP/1.1", "Host: t", f"Content-Length: {len(data)}", *headers]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: t", *headers, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def event(**fields: Any) -> str:
    body = {"subject_id": SUBJECT, "event_type": "accept-all", "schema_version": 1, **fields}
    return json.dumps(body)


def normalised(answer: bytes) -> tuple[str, list[tuple[str, str]], Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = head.decode("latin-1").split("\r\n")[0]
    headers = _headers(answer)
    length = dict(headers).get("content-length")
    if length is not None:
        assert int(length) == len(body)
    kept = [(name, value if name not in VARYING_HEADERS else "…") for name, value in headers]
    content: Any = body
    if body.startswith(b"{"):
        content = _without(json.loads(body))
    return status, kept, content


def _without(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without(v) for k, v in value.items() if k not in VARYING_KEYS}
    return value


def requests() -> dict[str, bytes]:
    stored = str(uuid.UUID(int=7))
    return {
        "new event": post(event()),
        "new event, with an X-Request-ID": post(event(), f"X-Request-ID: {uuid.uuid4()}"),
        "from an allowed site": post(event(), f"Origin: {ORIGIN}"),
        "from another site": post(event(), "Origin: https://elsewhere.example"),
        "a beacon": post(event(), "Content-Type: text/plain;charset=UTF-8", f"Origin: {ORIGIN}"),
        "a retry": post(event(event_id=stored)),
        "duplicate keys": post('{"a": 1, "a": 2}'),
        "another media type": post(event(), "Content-Type: application/xml"),
        "too large": post(b"{" + b" " * 40_000 + b"}"),
        "unknown property": post(event(), path="/v1/properties/nope/consent-events"),
        "a NUL in the property": post(event(), path="/v1/properties/it%00s/consent-events"),
        "through a proxy": post(event(), "X-Forwarded-For: 198.51.100.7"),
        "state": get(f"/v1/properties/itsailor/consents/{SUBJECT}?gpc=true", f"Origin: {ORIGIN}"),
        "state, a query given twice": get(
            f"/v1/properties/itsailor/consents/{SUBJECT}?dnt=1&dnt=1"
        ),
        "schema": get("/v1/properties/itsailor/schema"),
        "a missing schema": get("/v1/properties/nope/schema"),
        "the client": get("/client/1.0.2/consent.js"),
        "a client file that is not there": get("/client/0.0.1/consent.js"),
        "the receipt keys": get("/.well-known/jwks.json"),
    }


async def test_every_hot_answer_is_the_same_below_asgi(
    served: tuple[ConsentAPI, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, port = served
    raw = raw_server(app)
    served_raw: list[str] = []
    serve = raw.serve

    async def counted(cycle: Any, route: Any, write: Any) -> None:
        served_raw.append(cycle.scope["path"])
        await serve(cycle, route, write)

    monkeypatch.setattr(raw, "serve", counted)
    await exchange(port, post(event(event_id=str(uuid.UUID(int=7)))))  # the one to retry
    for name, request in requests().items():
        served_raw.clear()
        [below] = await exchange(port, request)
        assert served_raw, f"{name}: not served below ASGI"
        app.middleware_stack.raw = None  # type: ignore[union-attr]
        try:
            served_raw.clear()
            [through] = await exchange(port, request)
            assert not served_raw
        finally:
            app.middleware_stack.raw = raw  # type: ignore[union-attr]
        assert normalised(below) == normalised(through), name
    state = requests()["state"].replace(b"Connection", b"If-None-Match: x\r\nConnection")
    [answer] = await exchange(port, state)
    etag = dict(_headers(answer))["etag"]
    conditional = state.replace(b"If-None-Match: x", f"If-None-Match: {etag}".encode())
    [not_modified] = await exchange(port, conditional)
    assert not_modified.startswith(b"HTTP/1.1 304 ")
    assert not_modified.endswith(b"\r\n\r\n")


def _headers(answer: bytes) -> list[tuple[str, str]]:
    head = answer.partition(b"\r\n\r\n")[0].decode("latin-1")
    return [(line.partition(": ")[0], line.partition(": ")[2]) for line in head.split("\r\n")[1:]]


async def test_keep_alive_pipelining_and_100_continue(served: tuple[ConsentAPI, int]) -> None:
    _, port = served
    # Three on one connection, sent at once: answered in order, the last closes it.
    pipelined = post(event(), close=False) + get("/v1/properties/itsailor/schema").replace(
        b"Connection: close\r\n", b""
    ) + post(event())  # fmt: skip
    answers = await exchange(port, pipelined, answers=3)
    assert [answer[:12] for answer in answers] == [
        b"HTTP/1.1 201",
        b"HTTP/1.1 200",
        b"HTTP/1.1 201",
    ]
    assert b"connection: close" in answers[2].lower()
    assert b"connection:" not in answers[0].lower()
    # A client that waits for 100 Continue before its body gets it, then the answer.
    body = event().encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = post(body, "Expect: 100-continue")[: -len(body)]
    writer.write(head)
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body)
    final = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    assert final.startswith(b"HTTP/1.1 201 ")


async def test_a_failure_inside_is_a_500_problem_with_its_request_id(
    served: tuple[ConsentAPI, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, port = served
    raw = raw_server(app)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(app.services.catalog, "state", broken)
    before = answered(500)
    request = post(event(), f"Origin: {ORIGIN}")
    [answer] = await exchange(port, request)
    status, headers, body = normalised(answer)
    assert status == "HTTP/1.1 500 Internal Server Error"
    assert body["type"].endswith("/internal-error")
    request_id = dict(_headers(answer))["x-request-id"]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["instance"] == f"urn:request:{request_id}"
    assert answered(500) == before + 1
    # As through ASGI, where the outermost middleware answers it: no CORS headers.
    app.middleware_stack.raw = None  # type: ignore[union-attr]
    try:
        [through] = await exchange(port, request)
    finally:
        app.middleware_stack.raw = raw  # type: ignore[union-attr]
    assert normalised(through) == (status, headers, body)
    assert not any(name.startswith("access-control-") for name, _ in headers)


async def test_a_request_cancelled_at_shutdown_is_answered_500_and_closed(
    db_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the shutdown's grace period uvicorn cancels what is left; as its own cycle, the
    client is told (a 500, nothing acknowledged) and the connection closed."""
    async with serving(db_url, tmp_path, timeout_graceful_shutdown=0.5) as (app, port, server):
        stuck = asyncio.Event()

        async def forever(*args: Any, **kwargs: Any) -> Any:
            stuck.set()
            await asyncio.sleep(3600)

        monkeypatch.setattr(app.services.catalog, "state", forever)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post(event(), close=False))
        await asyncio.wait_for(stuck.wait(), timeout=10)
        server.should_exit = True
        answer = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"connection: close\r\n" in answer
    assert answer.endswith(b"Internal Server Error")


async def test_a_refused_head_waits_for_the_answers_before_it(
    served: tuple[ConsentAPI, int],
) -> None:
    """A malformed or oversized head pipelined after requests is refused after their answers,
    never in their place (the client would read the refusal as the event's answer)."""
    _, port = served
    bad_heads = (
        b"GARBAGE\x01 / HTTP/1.1\r\n\r\n",
        b"GET http://a:99999/ HTTP/1.1\r\nHost: t\r\n\r\n",  # parsed, but no URL httptools splits
        b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 40_000,
    )
    for bad in bad_heads:
        refused = b"HTTP/1.1 431" if b"X-Pad" in bad else b"HTTP/1.1 400"
        first = post(event(), close=False)
        second = get("/healthz").replace(b"Connection: close\r\n", b"")
        answers = await exchange(port, first + second + bad, answers=3)
        assert [answer[:12] for answer in answers] == [b"HTTP/1.1 201", b"HTTP/1.1 200", refused]
        answers = await exchange(port, first + bad, answers=2)
        assert [answer[:12] for answer in answers] == [b"HTTP/1.1 201", refused]


async def test_a_malformed_body_is_refused_and_closed(served: tuple[ConsentAPI, int]) -> None:
    """A body the parser cannot read (a bad chunk) is a 400 and a closed connection: of the
    request being served, at once; of one pipelined behind another, after that one's answer."""
    _, port = served
    bad = (
        f"POST {EVENTS} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\nzz\r\n"
    ).encode()
    [alone] = await exchange(port, bad)
    assert alone.startswith(b"HTTP/1.1 400 ")
    schema = get("/v1/properties/itsailor/schema").replace(b"Connection: close\r\n", b"")
    answers = await exchange(port, schema + bad, answers=2)
    assert [answer[:12] for answer in answers] == [b"HTTP/1.1 200", b"HTTP/1.1 400"]
    # Third of three: the two before it answered, in order.
    answers = await exchange(port, post(event(), close=False) + schema + bad, answers=3)
    assert [answer[:12] for answer in answers] == [
        b"HTTP/1.1 201",
        b"HTTP/1.1 200",
        b"HTTP/1.1 400",
    ]
    # The bad chunk in a later read, the request's head and its event already in: counted once,
    # under its route, with the 400 it got (not also as a refusal with no route, nor as a 499).
    before = (answered(400), answered(499), refused(400))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head, _, rest = bad.partition(b"\r\n\r\n")
    writer.write(head + b"\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.write(rest)
    later = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    assert later.startswith(b"HTTP/1.1 400 ")
    for _ in range(50):  # the request's task ends after the refusal is written
        if answered(400) > before[0]:
            break
        await asyncio.sleep(0.05)
    assert (answered(400), answered(499), refused(400)) == (before[0] + 1, *before[1:])


@pytest.mark.parametrize(
    ("path", "status"),
    [(EVENTS, b"415"), ("/v1/dsr/history", b"401")],  # the raw path; through ASGI (no key)
)
async def test_an_answer_before_a_100_continue_body_closes_the_connection(
    served: tuple[ConsentAPI, int], path: str, status: bytes
) -> None:
    """The client waits for 100 Continue and will not send the body once answered; the
    connection closes instead of reading its next request as that body."""
    _, port = served
    body = event().encode()
    head = post(
        body, "Expect: 100-continue", "Content-Type: application/xml", path=path, close=False
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head[: -len(body)])
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 " + status + b" ")
    assert b"connection: close\r\n" in answer
    # A client that sent its body without waiting keeps its connection: the next request on it
    # is answered.
    pipelined = head + get("/v1/properties/itsailor/schema")
    answers = await exchange(port, pipelined, answers=2)
    assert [answer[:12] for answer in answers] == [b"HTTP/1.1 " + status, b"HTTP/1.1 200"]
    assert b"connection: close" not in answers[0]


async def test_a_client_gone_before_its_body_is_499_and_the_server_goes_on(
    served: tuple[ConsentAPI, int],
) -> None:
    _, port = served
    before = answered(499)
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post(event())[:-10])
    await writer.drain()
    writer.close()
    for _ in range(100):
        if answered(499) > before:
            break
        await asyncio.sleep(0.02)
    assert answered(499) == before + 1
    [answer] = await exchange(port, post(event()))
    assert answer.startswith(b"HTTP/1.1 201 ")


async def test_the_head_cap_counts_only_the_head(served: tuple[ConsentAPI, int]) -> None:
    """The rough count of a head still arriving leaves out what the same read held of the requests
    before it: a large body, then the start of a small head, is not a 431."""
    _, port = served
    large = post(b"{" + b" " * 40_000 + b"}", close=False)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(large + b"GET /healthz HTTP/1.1\r\nHo")
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.write(b"st: t\r\nConnection: close\r\n\r\n")
    raw = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    answers = [part for part in re.split(rb"(?=HTTP/1\.1 \d{3} )", raw) if part]
    assert [answer[:12] for answer in answers] == [b"HTTP/1.1 413", b"HTTP/1.1 200"]

"""docs/guarantees.md, "No raw IP address is stored or logged", for what reaches the server below
the app: an `Upgrade: websocket` request. uvicorn's WebSocket protocol, on by default, would answer
it itself and log the peer's address and port, the raw path and its query (at DEBUG, every header,
`X-Forwarded-For` included); the service has no WebSocket route and serves none."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

from tests.factories import example, published
from tests.live import read_log, service_env, serving

SUBJECT = "6a1f3c0e-4b7d-4e42-9d0b-3f1e2a9c8b71"
FORWARDED_IP = "198.51.100.23"
SECRET_QUERY = "email=zed@example.com"


async def upgrade(url: str, path: str, peers: list[str]) -> bytes:
    """A WebSocket handshake on `path`, sent by hand; the answer's head. The client's address
    and port, as uvicorn would log them, go in `peers`."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    host, port = writer.get_extra_info("sockname")[:2]
    peers.append(f"{host}:{port}")
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"X-Forwarded-For: {FORWARDED_IP}\r\n\r\n".encode("ascii")
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    await writer.wait_closed()
    return head


async def test_a_websocket_upgrade_is_plain_http_and_logs_no_address_or_query(
    db_url: str, tmp_path: Path
) -> None:
    await published(db_url, example("itsailor"))
    log_path = tmp_path / "service.log"
    env = service_env(db_url, log_level="DEBUG", trusted_proxies="127.0.0.1/32")
    peers: list[str] = []
    async with serving(env, log_path) as url:
        state = f"/v1/properties/itsailor/consents/{SUBJECT}?{SECRET_QUERY}"
        for path in (state, f"/console/?{SECRET_QUERY}", f"/no/such/route?{SECRET_QUERY}"):
            head = await upgrade(url, path, peers)
            # Not switched, not refused by a WebSocket handshake: the app's own answer.
            assert not head.startswith((b"HTTP/1.1 101", b"HTTP/1.1 403")), head
        head = await upgrade(url, state, peers)
        assert head.startswith(b"HTTP/1.1 200 "), head
    log = read_log(log_path)
    assert '"route":"/v1/properties/{property}/consents/{subject_id}"' in log  # the access log ran
    for secret in (*peers, FORWARDED_IP, SECRET_QUERY, "zed@example.com", "WebSocket"):
        assert secret not in log, secret

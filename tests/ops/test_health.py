from __future__ import annotations

import io
import json
import re
from pathlib import Path

import httpx

from service.app import create_app
from service.core.logging import configure_logging
from service.core.pipeline import ConsentAPI
from tests.conftest import make_settings


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_when_migrated(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["migrations"] == "head"


async def test_request_id_is_returned_and_accepted(client: httpx.AsyncClient) -> None:
    generated = await client.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32
    supplied = await client.get(
        "/healthz", headers={"X-Request-ID": "6A1F3C0E-4B7D-4E42-9D0B-3F1E2A9C8B71"}
    )
    assert supplied.headers["x-request-id"] == "6A1F3C0E-4B7D-4E42-9D0B-3F1E2A9C8B71"
    # Only a UUID or 32 hex digits is kept: free text could carry an address into every line.
    for free in ("ticket-42.retry:1", "198.51.100.15:443", "2001:db8::1", "a" * 33):
        replaced = await client.get("/healthz", headers={"X-Request-ID": free})
        assert replaced.headers["x-request-id"] != free
        assert len(replaced.headers["x-request-id"]) == 32
    # Something that could smuggle text into logs is replaced, not echoed.
    hostile = await client.get("/healthz", headers={"X-Request-ID": 'a"b c'})
    assert hostile.headers["x-request-id"] != 'a"b c'


async def test_metrics_count_requests_by_route_template(
    client: httpx.AsyncClient, metrics_key: dict[str, str]
) -> None:
    await client.get("/healthz")
    await client.get("/no/such/path/ff00")
    body = (await client.get("/metrics", headers=metrics_key)).text
    assert 'consent_http_requests_total{method="GET",route="/healthz",status="200"}' in body
    assert 'route="<unmatched>",status="404"' in body
    assert "ff00" not in body
    assert "consent_http_request_duration_seconds_bucket" in body


async def test_access_log_lines_are_json_and_follow_the_level(client: httpx.AsyncClient) -> None:
    stream = io.StringIO()
    try:
        configure_logging("INFO", stream)
        await client.get("/healthz", headers={"X-Request-ID": "0123456789abcdef0123456789abcdef"})
        lines = [json.loads(text) for text in stream.getvalue().splitlines()]
        (line,) = [line for line in lines if line["logger"] == "service.access"]
        assert line.pop("timestamp").endswith("Z")
        assert line.pop("duration_ms") >= 0
        assert line == {
            "event": "request",
            "level": "info",
            "logger": "service.access",
            "request_id": "0123456789abcdef0123456789abcdef",
            "method": "GET",
            "route": "/healthz",
            "status": 200,
        }

        stream.seek(0)
        stream.truncate()
        configure_logging("WARNING", stream)
        await client.get("/healthz")
        assert "service.access" not in stream.getvalue()
    finally:
        configure_logging("INFO")


def _sample(body: str, series: str) -> float:
    for line in body.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_every_request_once(
    client: httpx.AsyncClient, metrics_key: dict[str, str]
) -> None:
    route = 'method="GET",route="/healthz"'
    series = (
        f'consent_http_requests_total{{{route},status="200"}}',
        f"consent_http_request_duration_seconds_count{{{route}}}",
        f'consent_http_request_duration_seconds_bucket{{le="+Inf",{route}}}',
    )
    before = (await client.get("/metrics", headers=metrics_key)).text
    for _ in range(7):
        await client.get("/healthz")
    after = (await client.get("/metrics", headers=metrics_key)).text
    for name in series:
        assert _sample(after, name) - _sample(before, name) == 7, name
    assert _sample(after, f"consent_http_request_duration_seconds_sum{{{route}}}") > _sample(
        before, f"consent_http_request_duration_seconds_sum{{{route}}}"
    )


async def test_metrics_need_a_key_unless_made_public(
    client: httpx.AsyncClient, db_url: str, tmp_path: Path
) -> None:
    from tests.factories import api_key, bearer

    assert (await client.get("/metrics")).status_code == 401
    other = bearer(await api_key(db_url, "dsr:read"))
    assert (await client.get("/metrics", headers=other)).status_code == 403
    app = create_app(make_settings(db_url, tmp_path, metrics_public=True))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as open_,
    ):
        assert (await open_.get("/metrics")).status_code == 200
        # A query parameter it does not take is refused, open or not: prometheus_client's own
        # handler filters by `name[]`, and this one would answer every metric.
        filtered = await open_.get("/metrics", params={"name[]": "consent_http_requests_total"})
        assert filtered.status_code == 422, filtered.text
        assert filtered.json()["detail"] == (
            "/query/name[]: not a query parameter of this endpoint (it takes none)"
        )
    reader = bearer(await api_key(db_url, "metrics:read"))
    assert (await client.get("/metrics?x=1", headers=reader)).status_code == 422
    assert (await client.get("/metrics?x=1", headers=other)).status_code == 403  # the key first
    assert (await client.get("/metrics", headers=reader)).status_code == 200


async def test_the_docs_page_loads_nothing_from_elsewhere(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()
    assets = re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', page.text)
    assert len(assets) >= 2
    for asset in assets:
        assert (await client.get(asset)).status_code == 200


async def test_a_client_gone_before_its_answer_is_counted_499(
    app: ConsentAPI, captured_logs: io.StringIO, db_url: str
) -> None:
    from tests.factories import example, published

    await published(db_url, example("itsailor"))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/properties/itsailor/consent-events",
        "raw_path": b"/v1/properties/itsailor/consent-events", "query_string": b"",
        "root_path": "", "headers": [(b"content-type", b"application/json")],
        "client": ("203.0.113.5", 1), "server": ("t", 80),
    }  # fmt: skip
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent == []
    lines = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    access = [line for line in lines if line.get("logger") == "service.access"]
    assert [line["status"] for line in access] == [499]


async def test_the_docs_pages_are_counted_under_their_own_route(
    client: httpx.AsyncClient, metrics_key: dict[str, str]
) -> None:
    await client.get("/docs")
    await client.get("/openapi.json")
    await client.get("/docs/assets/swagger-ui.css")
    body = (await client.get("/metrics", headers=metrics_key)).text
    for route in ("/docs", "/openapi.json", "/docs/assets"):
        assert f'consent_http_requests_total{{method="GET",route="{route}",status="200"}}' in body

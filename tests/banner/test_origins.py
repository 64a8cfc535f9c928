"""CORS that works for beacons and fails loudly (docs/banner.md, "Origins"): listed origins are
normalised and checked at start-up, credentials are allowed for them (a beacon's preflight needs
it) and never for `*`, and a browser on a site not listed cannot add events."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from service.app import create_app
from service.core.config import Settings
from tests.conftest import make_settings
from tests.factories import event, example, published

EVENTS = "/v1/properties/itsailor/consent-events"
SITE = "https://itsailor.io"


@pytest.mark.parametrize(
    ("configured", "normalised"),
    [
        ("https://itsailor.io/", [SITE]),
        ("HTTPS://ItSailor.IO:443", [SITE]),
        (
            "http://127.0.0.1:8080, https://itsailor.io, https://itsailor.io/",
            ["http://127.0.0.1:8080", SITE],
        ),
        ("https://bücher.example", ["https://xn--bcher-kva.example"]),
        ("https://[2001:DB8::1]:8443", ["https://[2001:db8::1]:8443"]),
        ("*", ["*"]),
    ],
)
def test_origins_are_normalised_as_browsers_send_them(
    configured: str, normalised: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSENT_CORS_ORIGINS", configured)
    assert Settings(_env_file=None).cors_origins == normalised


@pytest.mark.parametrize(
    ("configured", "message"),
    [
        ("itsailor.io", "not an origin: expected http(s)://host[:port]"),
        ("https://itsailor.io/cookies", "an origin has no path"),
        ("https://itsailor.io?x=1", "an origin has no path"),
        ("https://*.itsailor.io", "wildcards are not supported"),
        ("https://user:pw@itsailor.io", "holds credentials"),
        ("https://itsailor.io:70000", "bad host or port"),
        ("*, https://itsailor.io", "give `*` alone"),
    ],
)
def test_a_malformed_origin_is_a_startup_error(
    configured: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSENT_CORS_ORIGINS", configured)
    with pytest.raises(ValidationError, match=re.escape(message)):
        Settings(_env_file=None)


async def _client(
    db_url: str, tmp_path: Path, origins: list[str]
) -> AsyncIterator[httpx.AsyncClient]:
    await published(db_url, example("itsailor"))
    app = create_app(make_settings(db_url, tmp_path, cors_origins=origins))
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://consent.test") as client,
    ):
        yield client


@pytest.fixture
async def listed(db_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(db_url, tmp_path, [SITE]):
        yield client


async def test_a_json_beacons_preflight_allows_credentials(listed: httpx.AsyncClient) -> None:
    preflight = await listed.options(
        EVENTS,
        headers={
            "Origin": SITE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == SITE
    assert preflight.headers["access-control-allow-credentials"] == "true"
    posted = await listed.post(EVENTS, json=event("accept-all"), headers={"Origin": SITE})
    assert posted.status_code == 201
    assert posted.headers["access-control-allow-origin"] == SITE
    assert posted.headers["access-control-allow-credentials"] == "true"
    assert "retry-after" in posted.headers["access-control-expose-headers"].lower()


@pytest.mark.parametrize(
    ("origin", "method", "detail"),
    [
        (
            "https://elsewhere.example",
            "POST",
            "this preflight asks for what is not allowed: origin (allowed origins are set with "
            "CONSENT_CORS_ORIGINS)",
        ),
        (
            SITE,
            "DELETE",
            "this preflight asks for what is not allowed: method (allowed methods are GET, POST)",
        ),
    ],
)
async def test_a_refused_preflight_names_what_is_allowed_instead(
    listed: httpx.AsyncClient, origin: str, method: str, detail: str
) -> None:
    """Only what was refused is explained: an allowed origin asking for DELETE is not told to
    look at CONSENT_CORS_ORIGINS."""
    preflight = await listed.options(
        EVENTS, headers={"Origin": origin, "Access-Control-Request-Method": method}
    )
    assert preflight.status_code == 400
    assert preflight.json()["detail"] == detail


async def test_a_wildcard_never_allows_credentials(db_url: str, tmp_path: Path) -> None:
    async for client in _client(db_url, tmp_path, ["*"]):
        posted = await client.post(EVENTS, json=event("accept-all"), headers={"Origin": SITE})
        assert posted.status_code == 201
        assert posted.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in posted.headers


async def test_a_browser_on_a_site_not_listed_cannot_add_events(
    listed: httpx.AsyncClient,
) -> None:
    subject = uuid.uuid4()
    # text/plain needs no preflight, so CORS alone would let this through (sendBeacon does it).
    refused = await listed.post(
        EVENTS,
        content=httpx.Request("POST", "/", json=event("accept-all", subject_id=subject)).read(),
        headers={"Origin": "https://elsewhere.example", "Content-Type": "text/plain"},
    )
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["detail"] == (
        "a browser on https://elsewhere.example may not record consent events: that site is not "
        "in CONSENT_CORS_ORIGINS"
    )
    state = (await listed.get(f"/v1/properties/itsailor/consents/{subject}")).json()
    assert state["status"] == "none"  # nothing was stored
    # Without an Origin (a server, curl) or from the service's own origin, events are taken:
    # the check keeps other sites' browsers out; it is not authentication.
    for headers in ({}, {"Origin": "http://consent.test"}):
        response = await listed.post(EVENTS, json=event("accept-all"), headers=headers)
        assert response.status_code == 201, headers

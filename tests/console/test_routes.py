"""The console's files as the service serves them: a fixed allow-list from the package, a strict
Content-Security-Policy on every answer, revalidated with an ETag, nothing else reachable."""

from __future__ import annotations

import re

import httpx
import pytest

from service.console.routes import ASSETS, CSP, STATIC
from service.core.pipeline import ConsentAPI
from service.dsr.bodies import DsrAction

SECURITY = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def has_security_headers(response: httpx.Response) -> bool:
    return all(response.headers.get(name) == value for name, value in SECURITY.items())


def test_every_file_of_the_console_is_on_the_allow_list() -> None:
    assert sorted(path.name for path in STATIC.iterdir()) == sorted(ASSETS)


def test_the_audit_filter_offers_every_action() -> None:
    """A DSR action the filter does not list could not be picked out of the audit log."""
    page = (STATIC / "index.html").read_text()
    select = page[
        page.index('<select id="audit-action"') : page.index(
            "</select>", page.index('<select id="audit-action"')
        )
    ]
    offered = set(re.findall(r'<option value="([a-z-]+)">', select))
    assert offered == {action.value for action in DsrAction}


def test_the_page_has_no_inline_script_style_or_handler() -> None:
    """What the CSP would refuse: the page must not need it."""
    page = (STATIC / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == []
    assert re.findall(r"\sstyle=", page) == []
    assert re.findall(r"\son[a-z]+=", page) == []
    assert "<style" not in page
    for name in ASSETS:
        if name.endswith(".js"):
            source = (STATIC / name).read_text()
            assert not re.search(
                r"\.(inner|outer)HTML\b|insertAdjacentHTML|document\.write", source
            )


async def test_the_index_and_every_asset_are_served_with_the_policy(
    client: httpx.AsyncClient,
) -> None:
    index = await client.get("/console/")
    assert index.status_code == 200
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    assert index.content == (STATIC / "index.html").read_bytes()
    for name in ASSETS:
        response = await client.get(f"/console/{name}")
        assert response.status_code == 200, name
        assert has_security_headers(response), (name, response.headers)
        assert response.headers["cache-control"] == "no-cache"
        assert response.content == (STATIC / name).read_bytes()
    assert (
        (await client.get("/console/app.js")).headers["content-type"].startswith("text/javascript")
    )
    assert (await client.get("/console/console.css")).headers["content-type"].startswith("text/css")


async def test_an_unchanged_file_is_a_304(client: httpx.AsyncClient) -> None:
    first = await client.get("/console/")
    etag = first.headers["etag"]
    again = await client.get("/console/", headers={"If-None-Match": etag})
    assert (again.status_code, again.content) == (304, b"")
    assert again.headers["etag"] == etag
    assert has_security_headers(again)
    other = await client.get("/console/app.js", headers={"If-None-Match": etag})
    assert other.status_code == 200


async def test_the_bare_path_redirects_to_the_folder(client: httpx.AsyncClient) -> None:
    response = await client.get("/console")
    assert response.status_code == 307
    assert response.headers["location"] == "/console/"
    assert has_security_headers(response)


@pytest.mark.parametrize(
    "path",
    [
        "/console/routes.py",
        "/console/%2e%2e/%2e%2e/app.py",
        "/console/static/app.js",
        "/console/nope.js",
        "/console/app.js%00.html",
    ],
)
async def test_anything_else_is_a_404_problem(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert has_security_headers(response)


async def test_an_encoded_slash_is_refused_before_the_console_sees_it(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/console/..%2Froutes.py")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "encoded slash" in response.json()["detail"]


def test_the_console_is_not_in_the_api_document(app: ConsentAPI) -> None:
    paths = app.openapi()["paths"]
    assert not [path for path in paths if path.startswith("/console")]

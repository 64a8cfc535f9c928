"""The web console at /console/: a few static files from the package, no build step.

The page is a client of the documented API alone (same origin, the key the user pastes kept in
the tab's sessionStorage). Its files are read once, at import, into a fixed allow-list: a name
that is not on it is a 404 problem, so no path ever reaches the file system. Every answer carries
a strict Content-Security-Policy (no inline script or style, nothing from another origin) and is
revalidated on each load (`no-cache` with an ETag, 304 on If-None-Match). `X-Content-Type-Options:
nosniff` is added to every answer of the app by core/observe.py, these included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Response
from fastapi.responses import RedirectResponse

from service.core.errors import problem_response
from service.core.headers import etag_matches
from service.core.resources import static_file

STATIC = Path(__file__).resolve().parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Every file the console is made of; anything else under /console/ is a 404.
ASSETS = (
    "index.html",
    "console.css",
    "favicon.svg",
    "app.js",
    "api.js",
    "dom.js",
    "person.js",
    "withdraw.js",
    "audit.js",
    "properties.js",
    "schema.js",
    "diff.js",
    "stats.js",
    "charts.js",
)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


FILES = {name: static_file(STATIC / name, MEDIA_TYPES[Path(name).suffix]) for name in ASSETS}

router = APIRouter(include_in_schema=False)


def _asset(name: str, if_none_match: str | None) -> Response:
    asset = FILES.get(name)
    if asset is None:
        return problem_response(
            status=404,
            slug="not-found",
            title="Not found",
            detail=f"the console has no file {name[:100]!r}",
            headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
        )
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": "no-cache"}
    if etag_matches(if_none_match, asset.etag):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.get("/console")
async def console_root() -> Response:
    return RedirectResponse(
        "/console/", status_code=307, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    )


@router.get("/console/")
async def console_index(if_none_match: Annotated[str | None, Header()] = None) -> Response:
    return _asset("index.html", if_none_match)


@router.get("/console/{name:path}")
async def console_file(
    name: str, if_none_match: Annotated[str | None, Header()] = None
) -> Response:
    return _asset(name, if_none_match)

"""The browser client, served at a stable, versioned, long-cached path (docs/banner.md).

`/client/{CLIENT_VERSION}/consent.js` never changes once released: a change to a file is a new
version (the test of `web/SHA256SUMS` catches one made without), so it is cached for a year and
sites pin the version they tested. Earlier released versions stay served, from
`web/released/<version>/`, so a site that pinned one keeps its banner when the service is
updated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Response
from fastapi import Path as PathParam

from service.core.errors import NotFound, problem_responses
from service.core.headers import etag_matches
from service.core.pipeline import hot
from service.core.resources import StaticFile, static_file

CLIENT_VERSION = "1.0.3"
WEB = Path(__file__).resolve().parent / "web"
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".ts": "text/plain; charset=utf-8"}
CACHE = "public, max-age=31536000, immutable"


RELEASED = WEB / "released"


def _files(folder: Path) -> dict[str, StaticFile]:
    return {
        path.name: static_file(path, MEDIA_TYPES[path.suffix])
        for path in sorted(folder.iterdir())
        if path.suffix in MEDIA_TYPES
    }


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


# Every version this service serves: its own, and each earlier one as it was released.
VERSIONS = {CLIENT_VERSION: _files(WEB)} | {
    folder.name: _files(folder) for folder in sorted(RELEASED.iterdir()) if folder.is_dir()
}

router = APIRouter(tags=["banner"])


@router.get(
    "/client/{version}/{name}",
    summary="The browser client (consent.js, consent-cookieconsent.js, consent.d.ts)",
    response_class=Response,
    responses={
        200: {"content": {"text/javascript": {}}, "description": "The file (cached a year)"},
        304: {"description": "Not modified (If-None-Match)"},
        **problem_responses(404),
    },
)
@hot
async def client_file(
    version: Annotated[str, PathParam(max_length=32, description="The client's version.")],
    name: Annotated[str, PathParam(max_length=64, examples=["consent.js"])],
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    file = VERSIONS.get(version, {}).get(name)
    if file is None:
        earlier = ", ".join(sorted(set(VERSIONS) - {CLIENT_VERSION}, key=_numbers, reverse=True))
        raise NotFound(
            f"no client file {name!r} at version {version!r}: this service serves version "
            f"{CLIENT_VERSION} ({', '.join(sorted(VERSIONS[CLIENT_VERSION]))})"
            + (f", and the earlier {earlier}" if earlier else "")
        )
    headers = {
        "ETag": file.etag,
        "Cache-Control": CACHE,
        # Loadable by a page on another site, including one that sets
        # Cross-Origin-Embedder-Policy.
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if etag_matches(if_none_match, file.etag):
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.media_type, headers=headers)

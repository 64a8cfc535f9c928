"""CORS for the banner API, and the check that keeps other sites' browsers out of the ledger.

Starlette's middleware does the CORS part; a refused preflight is answered as a problem document
like every other error (Starlette answers it as plain text). CORS only stops a browser from
*reading* an answer: a `text/plain` POST (what `sendBeacon` sends with a string) needs no
preflight, so without `BrowserOrigins` a page on any site could add events to a property's
ledger from its visitors' browsers (docs/banner.md, "Origins").
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from service.core.errors import problem_response


class ProblemCORSMiddleware(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        allowed = {
            "origin": "origins are set with CONSENT_CORS_ORIGINS",
            "method": f"methods are {', '.join(self.allow_methods)}",
            "headers": f"headers are {', '.join(sorted(self.allow_headers))}",
        }
        notes = "; ".join(
            f"allowed {text}" for part, text in allowed.items() if part in refused.split(", ")
        )
        return problem_response(
            status=400,
            slug="cors-preflight-refused",
            title="CORS preflight refused",
            detail=f"this preflight asks for what is not allowed: {refused}"
            + (f" ({notes})" if notes else ""),
            headers={
                name: value
                for name, value in response.headers.items()
                if name.lower().startswith("access-control-") or name.lower() == "vary"
            },
        )


class BrowserOrigins:
    """Which browsers may write: with CONSENT_CORS_ORIGINS set (and not `*`), a request whose
    `Origin` header names another site is refused. A request without `Origin` (a server, curl)
    and a same-origin one pass: this restricts browsers on other sites, not writers in general."""

    __slots__ = ("_allowed", "open")

    def __init__(self, origins: list[str]) -> None:
        self.open = not origins or "*" in origins
        self._allowed = frozenset(origin.encode("latin-1") for origin in origins)

    def refuses(self, headers: dict[bytes, bytes]) -> str | None:
        """The refused origin, or None. `headers` are the request's (lower-case names); origins
        are compared as browsers send them, which CONSENT_CORS_ORIGINS is normalised to."""
        if self.open:
            return None
        origin = headers.get(b"origin")
        if origin is None or origin in self._allowed:
            return None
        host = headers.get(b"host")
        if host is not None and origin.partition(b"://")[2] == host.lower():
            return None  # same origin: a page the service itself serves
        return origin.decode("latin-1")[:200]

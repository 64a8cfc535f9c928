"""CORS for the banner API: Starlette's middleware, with a refused preflight answered as a problem
document like every other error (Starlette answers it as plain text)."""

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
        return problem_response(
            status=400,
            slug="cors-preflight-refused",
            title="CORS preflight refused",
            detail=f"this preflight asks for what is not allowed: {refused} "
            "(allowed origins are set with CONSENT_CORS_ORIGINS)",
            headers={
                name: value
                for name, value in response.headers.items()
                if name.lower().startswith("access-control-") or name.lower() == "vary"
            },
        )

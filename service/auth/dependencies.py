"""The HTTP side of API keys: the dependency each admin route declares for the scope it needs.
(This area has no endpoints of its own: keys are managed with the CLI.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.auth.service import Principal, Scope, authenticate
from service.core.errors import Forbidden, Unauthorized
from service.state import Engine

_bearer = HTTPBearer(
    auto_error=False, description="An API key created with `consent-service keys create`."
)


def require_scope(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency: 401 without a valid, unrevoked key; 403 when the key lacks `scope`."""

    async def dependency(
        engine: Engine,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None:
            raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
        principal = await authenticate(engine, credentials.credentials)
        if principal is None:
            raise Unauthorized("the API key is unknown or has been revoked")
        if scope.value not in principal.scopes:
            raise Forbidden(f"this API key lacks the '{scope.value}' scope")
        return principal

    return dependency


async def private(response: Response) -> None:
    """A router dependency: what an admin route answers is personal data or a secret, never to
    be kept by a cache or a browser."""
    response.headers["Cache-Control"] = "no-store"


DsrReader = Annotated[Principal, Depends(require_scope(Scope.DSR_READ))]
DsrEraser = Annotated[Principal, Depends(require_scope(Scope.DSR_ERASE))]
Auditor = Annotated[Principal, Depends(require_scope(Scope.AUDIT_READ))]
SchemaWriter = Annotated[Principal, Depends(require_scope(Scope.SCHEMAS_WRITE))]

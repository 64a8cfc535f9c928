"""The HTTP side of API keys: the dependency each admin route declares for the scope it needs.
(This area has no endpoints of its own: keys are managed with the CLI.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine

from service.auth.service import Principal, Scope, authenticate
from service.core.errors import Forbidden, Unauthorized
from service.state import Engine, SettingsOf

_bearer = HTTPBearer(
    auto_error=False, description="An API key created with `consent-service keys create`."
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def require_scope(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency: 401 without a valid, unrevoked key; 403 when the key lacks `scope`."""

    async def dependency(engine: Engine, credentials: Credentials) -> Principal:
        return await _principal(engine, credentials, scope)

    return dependency


async def _principal(
    engine: AsyncEngine, credentials: HTTPAuthorizationCredentials | None, scope: Scope
) -> Principal:
    if credentials is None:
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
    principal = await authenticate(engine, credentials.credentials)
    if principal is None:
        raise Unauthorized("the API key is unknown or has been revoked")
    if scope.value not in principal.scopes:
        raise Forbidden(f"this API key lacks the '{scope.value}' scope")
    return principal


async def metrics_reader(settings: SettingsOf, engine: Engine, credentials: Credentials) -> None:
    """/metrics shows routes, volumes and timings: a key with `metrics:read`, unless the operator
    serves it openly (CONSENT_METRICS_PUBLIC, for a scraper on a private network)."""
    if not settings.metrics_public:
        await _principal(engine, credentials, Scope.METRICS_READ)


async def private(response: Response) -> None:
    """A router dependency: what an admin route answers is personal data or a secret, never to
    be kept by a cache or a browser."""
    response.headers["Cache-Control"] = "no-store"


DsrReader = Annotated[Principal, Depends(require_scope(Scope.DSR_READ))]
DsrEraser = Annotated[Principal, Depends(require_scope(Scope.DSR_ERASE))]
Auditor = Annotated[Principal, Depends(require_scope(Scope.AUDIT_READ))]
SchemaWriter = Annotated[Principal, Depends(require_scope(Scope.SCHEMAS_WRITE))]

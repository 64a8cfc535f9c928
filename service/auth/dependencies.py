"""The HTTP side of API keys: the dependency each admin route declares for the scope it needs.
(This area has no endpoints of its own: keys are managed with the CLI.)"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine

from service.auth.service import Principal, Scope, authenticate
from service.core.db_errors import database_unreachable
from service.core.errors import Forbidden, TooManyRequests, Unauthorized
from service.core.query import refuse_undeclared_query
from service.core.rate_limit import RateLimiter
from service.state import AuthFailures, ClientAddressOf, Engine, Hashing, SettingsOf

_bearer = HTTPBearer(
    auto_error=False, description="An API key created with `consent-service keys create`."
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def require_scope(scope: Scope, *also: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency: 401 without a valid, unrevoked key; 403 when the key lacks `scope` (or one
    of `also`); then, the key accepted, 422 for a query parameter the route does not take
    (core/query.py)."""

    async def dependency(
        request: Request,
        engine: Engine,
        credentials: Credentials,
        client: Client,
        failures: AuthFailures,
    ) -> Principal:
        principal = await _principal(engine, credentials, scope, client, failures)
        for needed in also:
            if needed.value not in principal.scopes:
                raise Forbidden(f"this API key lacks the '{needed.value}' scope")
        refuse_undeclared_query(request)
        return principal

    return dependency


async def _client(request: Request, find: ClientAddressOf, hasher: Hashing) -> str:
    """Who is calling, as the keyed hash of the client address (never the address itself)."""
    peer = request.scope.get("client")
    address = find(peer[0] if peer else None, request.scope["headers"])
    return hasher.ip_normalised(address) if address is not None else "unknown"


Client = Annotated[str, Depends(_client)]


async def _principal(
    engine: AsyncEngine,
    credentials: HTTPAuthorizationCredentials | None,
    scope: Scope,
    client: str,
    failures: RateLimiter,
) -> Principal:
    """The key's principal. A client that failed AUTH_FAILURE_LIMIT times this minute is refused
    before its key is even looked up: guessing keys costs it a minute per few tries."""
    retry_after = failures.retry_after(client)
    if retry_after is not None:
        raise TooManyRequests(
            f"too many failed API-key checks from this client; retry in {retry_after} s",
            retry_after=retry_after,
        )
    if credentials is None:
        failures.hit(client)
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
    principal = await authenticate(engine, credentials.credentials)
    if principal is None:
        failures.hit(client)
        raise Unauthorized("the API key is unknown or has been revoked")
    if scope.value not in principal.scopes:
        raise Forbidden(f"this API key lacks the '{scope.value}' scope")
    return principal


# /metrics must keep answering while the database is down: the outage (its 503s) is what the
# scrape has to show. A key that passed the check in the last METRICS_KEY_GRACE seconds is let in
# without the database while it cannot be reached (docs/architecture.md, "Metrics during an
# outage").
METRICS_KEY_GRACE = 300.0
_metrics_keys: dict[bytes, float] = {}  # SHA-256 of a key that passed → when (monotonic)


async def metrics_reader(
    request: Request,
    settings: SettingsOf,
    engine: Engine,
    credentials: Credentials,
    client: Client,
    failures: AuthFailures,
) -> None:
    """/metrics shows routes, volumes and timings: a key with `metrics:read`, unless the operator
    serves it openly (CONSENT_METRICS_PUBLIC, for a scraper on a private network). Like every
    admin route, it then refuses a query parameter it does not take: `?name[]=…`, the metric
    filter of prometheus_client's own handler, would otherwise answer every metric."""
    if settings.metrics_public:
        refuse_undeclared_query(request)
        return
    digest = hashlib.sha256(credentials.credentials.encode()).digest() if credentials else b""
    try:
        await _principal(engine, credentials, Scope.METRICS_READ, client, failures)
    except Exception as exc:
        passed = _metrics_keys.get(digest)
        recent = passed is not None and time.monotonic() - passed <= METRICS_KEY_GRACE
        if not (recent and database_unreachable(exc)):
            raise
        refuse_undeclared_query(request)
        return
    now = time.monotonic()
    for known, when in list(_metrics_keys.items()):  # a handful of keys: forget the stale ones
        if now - when > METRICS_KEY_GRACE:
            del _metrics_keys[known]
    _metrics_keys[digest] = now
    refuse_undeclared_query(request)


async def private(response: Response) -> None:
    """A router dependency: what an admin route answers is personal data or a secret, never to
    be kept by a cache or a browser."""
    response.headers["Cache-Control"] = "no-store"


DsrReader = Annotated[Principal, Depends(require_scope(Scope.DSR_READ))]
DsrEraser = Annotated[Principal, Depends(require_scope(Scope.DSR_ERASE))]
# Counting what an erasure would take is a look-up of a person's records: `dsr:read` too.
DsrEraseCounter = Annotated[Principal, Depends(require_scope(Scope.DSR_ERASE, Scope.DSR_READ))]
DsrWithdrawer = Annotated[Principal, Depends(require_scope(Scope.DSR_WITHDRAW))]
Auditor = Annotated[Principal, Depends(require_scope(Scope.AUDIT_READ))]
SchemaWriter = Annotated[Principal, Depends(require_scope(Scope.SCHEMAS_WRITE))]
StatsReader = Annotated[Principal, Depends(require_scope(Scope.STATS_READ))]

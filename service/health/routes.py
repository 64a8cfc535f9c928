"""Liveness, readiness and metrics for operators and orchestrators."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy.exc
from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from sqlalchemy import Row, text

from service.auth.dependencies import metrics_reader
from service.core.db import autocommit
from service.core.db_errors import not_ready_reason
from service.core.errors import RETRY_AFTER, RETRY_AFTER_DOC, problem_responses
from service.core.json_input import StrictJSONRoute
from service.core.logging import get_logger
from service.core.migrations import current_revision, newer_than_release
from service.core.observe import exposition
from service.state import Engine, MigrationHead

router = APIRouter(tags=["operations"], route_class=StrictJSONRoute)
log = get_logger("service.health")

READINESS_TIMEOUT_SECONDS = 2.0
# A probe's answer is about this process at this instant: no cache (a proxy's, a client's) may
# keep one, or an orchestrator would route to a process that has since gone down. A 503 says
# when to look again, as the API's own 503s do (README, "API at a glance").
PROBE_HEADERS = {"Cache-Control": "no-store"}
NOT_READY_HEADERS = {**PROBE_HEADERS, "Retry-After": RETRY_AFTER}


# What the API needs of the database besides its tables, asked once the revision is head: a
# server that takes writes (not a standby, not `default_transaction_read_only`), and a role that
# may record events (a member of `consent_api`). Either missing, every consent event is a 503.
SERVES_WRITES = text(
    """
    SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on' AS read_only,
           has_function_privilege('consent_record_events(jsonb, text, bytea)', 'EXECUTE')
               AS records
    """
)


class Liveness(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    migrations: str


@router.get("/healthz", summary="The process is up", response_model=Liveness)
async def healthz() -> JSONResponse:
    return JSONResponse(Liveness(status="ok").model_dump(), headers=PROBE_HEADERS)


@router.get(
    "/readyz",
    summary="Ready to serve: database reachable and migrated to head (or a newer release's)",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready", "headers": RETRY_AFTER_DOC}},
)
async def readyz(engine: Engine, head: MigrationHead) -> JSONResponse:
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            try:
                revision, ahead, writes = await _look(engine, head)
            except sqlalchemy.exc.DBAPIError as lost:
                # A pooled connection the server has since closed (a restart, a failover, a
                # terminated backend) says nothing of the database now: ask on a new one.
                if not lost.connection_invalidated:
                    raise
                revision, ahead, writes = await _look(engine, head)
    except Exception as exc:  # any failure to use the database means "not ready"
        reason = not_ready_reason(exc)
        log.warning("readiness_database_unavailable", error=type(exc).__name__, reason=reason)
        return _not_ready(database=reason, migrations="unknown")
    if writes is None:
        state = "not migrated" if revision is None else f"at {revision}"
        return _not_ready(database="ok", migrations=f"{state}, head is {head}")
    migrations = f"at {revision}, newer than this release's {head}" if ahead else "head"
    if writes.read_only:
        return _not_ready(database="read-only: it takes no writes", migrations=migrations)
    if not writes.records:
        return _not_ready(
            database="this role may not record events: GRANT consent_api TO it",
            migrations=migrations,
        )
    ready = Readiness(status="ok", database="ok", migrations=migrations)
    return JSONResponse(ready.model_dump(), headers=PROBE_HEADERS)


async def _look(engine: Engine, head: str | None) -> tuple[str | None, bool, Row[Any] | None]:
    """The database's revision, whether a newer release made it, and, when this release can
    serve on it, whether it takes this role's writes."""
    async with autocommit(engine) as connection:
        revision = await current_revision(connection)
        # Migrated by the next release (it migrates before its replicas replace these): a
        # release's migrations keep the one before it working (docs/architecture.md,
        # "Migrations"), so these serve on rather than all leave the load balancer at once.
        ahead = newer_than_release(revision)
        usable = revision == head or ahead
        writes = (await connection.execute(SERVES_WRITES)).one() if usable else None
    return revision, ahead, writes


def _not_ready(*, database: str, migrations: str) -> JSONResponse:
    body = Readiness(status="unavailable", database=database, migrations=migrations)
    return JSONResponse(body.model_dump(), status_code=503, headers=NOT_READY_HEADERS)


@router.get(
    "/metrics",
    dependencies=[Depends(metrics_reader)],
    summary="Prometheus metrics (a key with metrics:read, unless CONSENT_METRICS_PUBLIC)",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"},
        **problem_responses(401, 403, 422, 429, 503),
    },
)
async def metrics() -> Response:
    return Response(
        exposition(), media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"}
    )

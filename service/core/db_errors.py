"""The database's errors as a client sees them: the database being away or not ready is a `503`
(`unavailable`, with `Retry-After`), never a `500`; anything else it raises is a fault of ours,
logged with its traceback (core/errors.py renders both)."""

from __future__ import annotations

import asyncpg
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from service.core.errors import (
    RETRY_AFTER,
    internal_error_response,
    log,
    log_unexpected,
    problem_response,
)

# The database is unreachable, restarting or refusing connections: nothing the client did, and
# nothing was stored; a retry later may succeed.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # A connection caught mid-restart: "cannot switch to state …".
    asyncpg.InternalClientError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,  # shutdown, restart, statement cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.PostgresSystemError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
)


def _unavailable(detail: str) -> JSONResponse:
    """A 503 `unavailable` with `Retry-After`: nothing the client did, nothing stored."""
    return problem_response(
        status=503,
        slug="unavailable",
        title="Service unavailable",
        detail=f"{detail}; nothing was stored, retry later",
        headers={"Retry-After": RETRY_AFTER},
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    if sqlstate_of(exc) == QUERY_CANCELED:
        # A statement timeout (the event writer's, or the database's own) or an operator's
        # cancel: the statement was rolled back, and the database is there.
        log.warning("database_statement_cancelled")
        return _unavailable("the database did not finish in time")
    if isinstance(exc, sqlalchemy.exc.TimeoutError):  # the pool's: no connection came free
        log.warning("database_pool_exhausted")
        return _unavailable("every database connection of this process is busy")
    log.warning("database_unavailable", exc_type=type(exc).__name__)
    return _unavailable("the database cannot be reached")


# SQLSTATE classes that mean the database, not the request, failed: connection (08), resources
# (53), operator intervention (57), system (58).
UNAVAILABLE_SQLSTATE_CLASSES = {"08", "53", "57", "58"}


# SQLSTATEs that mean this database is not ready for the service yet, which an operator fixes
# and a client can only wait for: it does not exist (3D000), is not migrated (an undefined table,
# column or function: 42P01, 42703, 42883), refuses this login (class 28), or is a standby that
# takes no writes (25006: a URL without target_session_attrs=read-write, docs/scaling.md).
NOT_READY_SQLSTATES = {"3D000", "42P01", "42703", "42883", "25006"}
NOT_READY_SQLSTATE_CLASSES = {"28"}
# The role may not use what the service needs (42501, insufficient_privilege, with PostgreSQL's
# own "permission denied for …"): a login role that was never made a member of `consent_api`
# (README, Operations), the operator's grant to give. The evidence's guard triggers raise the
# same code with messages of their own ("consent events are append-only", …): the service asked
# for what the evidence forbids, a fault of ours (500), never read as a missing grant.
PERMISSION_DENIED = "42501"
MISSING_GRANT = "permission denied for "


def missing_grant(exc: BaseException) -> bool:
    """Whether `exc` is PostgreSQL refusing the role a grant, not a guard trigger's refusal."""
    fields = _postgres_fields(exc)
    message = str(getattr(fields, "message", "") or "")
    return sqlstate_of(exc) == PERMISSION_DENIED and message.startswith(MISSING_GRANT)


def sqlstate_of(exc: BaseException) -> str:
    """The PostgreSQL error code under SQLAlchemy's wrapping (or asyncpg's own), or ""."""
    state = getattr(getattr(exc, "orig", exc), "sqlstate", None)
    return state if isinstance(state, str) else ""


def not_accepting_connections(exc: BaseException) -> bool:
    """`ALTER DATABASE … ALLOW_CONNECTIONS false` (or a database being dropped): 55000 with
    PostgreSQL's own words; other 55000s are the service's own mistakes."""
    message = str(getattr(_postgres_fields(exc), "message", "") or "")
    return sqlstate_of(exc) == "55000" and "is not currently accepting connections" in message


def not_ready_reason(exc: BaseException) -> str:
    """What `/readyz` says of a database it could not use: unreachable, or which refusal. A
    transaction pooler answers a database or login it refuses with 08P01 and a message of its
    own (PgBouncer: "no such database: …", "… authentication failed"), read here too."""
    state = sqlstate_of(exc)
    message = str(getattr(_postgres_fields(exc), "message", "") or "")
    if state == "3D000" or (state == "08P01" and message.startswith("no such database")):
        return "does not exist"
    if state[:2] == "28" or (state == "08P01" and "authentication failed" in message):
        return "refuses this login"
    if missing_grant(exc):
        return "refuses this role: GRANT consent_api TO it"
    if state == "25006":
        return "read-only: it takes no writes"
    if not_accepting_connections(exc):
        return "does not accept connections"
    if isinstance(exc, sqlalchemy.exc.TimeoutError):
        return "busy: no connection of this process came free in time"
    if state == QUERY_CANCELED:
        return "busy: it did not answer in time"
    return "unreachable"


async def _database_not_ready(request: Request, sqlstate: str) -> JSONResponse:
    log.warning("database_not_ready", sqlstate=sqlstate)
    return _unavailable(
        "the database is not ready (not created, not migrated, or refusing this login)"
    )


# A prepared statement missing (26000) or there already (42P05) on the server connection: the
# service never names statements in SQL, so this is a transaction pooler lending another server
# connection mid-statement, without CONSENT_DB_POOL_MODE=transaction (docs/scaling.md,
# "PgBouncer"). An operator's setting to fix, not the client's doing.
POOLER_SQLSTATES = {"26000", "42P05"}


# The database rolled a transaction back to keep it apart from another one (class 40: 40001
# serialization failure, 40P01 deadlock): nothing the client did and nothing stored; a retry
# may succeed.
CONFLICT_SQLSTATE_CLASS = "40"
QUERY_CANCELED = "57014"


# `consent_record_events` refused a batch whose event time is not the database's (migration 0024):
# the service's clock and the database's are apart, an operator's matter; nothing was stored.
EVENT_TIME_SQLSTATE = "CR001"


# `consent_record_events` refused an event on a version that was not in force (migration 0024): the
# service checks it first, so this is a race with a cancellation in another process (its cached
# pointer lives a second): the client's to fix, a 422.
VERSION_IN_FORCE = "consent_events_version_in_force"


def _postgres_fields(exc: BaseException) -> object:
    """asyncpg's own error under SQLAlchemy's wrapping, where there is one."""
    orig = getattr(exc, "orig", exc)
    return orig if hasattr(orig, "constraint_name") else getattr(orig, "__cause__", orig)


async def _by_sqlstate(request: Request, exc: Exception, sqlstate: str) -> JSONResponse:
    fields = _postgres_fields(exc)
    if sqlstate == "23503" and getattr(fields, "constraint_name", None) == VERSION_IN_FORCE:
        detail = str(getattr(fields, "message", "") or fields)
        return problem_response(
            status=422,
            slug="validation-error",
            title="The request is invalid",
            detail=detail,
            extra={"errors": [{"pointer": "/body/schema_version", "detail": "not in force"}]},
        )
    if sqlstate == EVENT_TIME_SQLSTATE:
        log.error(
            "event_time_refused",
            error=str(getattr(exc, "orig", exc)),
            hint="the service's clock and the database's differ by more than "
            "consent_event_time_window.tolerance: check both hosts' time (NTP)",
        )
        return _unavailable("the service's clock and the database's disagree")
    if sqlstate in POOLER_SQLSTATES:
        log.error(
            "database_pooler_mismatch",
            sqlstate=sqlstate,
            hint="a transaction pooler is in front of the database: set "
            "CONSENT_DB_POOL_MODE=transaction",
        )
        return await _database_unavailable(request, exc)
    if sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES:
        return await _database_unavailable(request, exc)
    if sqlstate[:2] == CONFLICT_SQLSTATE_CLASS:
        log.warning("database_conflict", sqlstate=sqlstate)
        return _unavailable("another change to the same records was under way")
    if not_accepting_connections(exc):
        return await _database_not_ready(request, sqlstate)
    if sqlstate in NOT_READY_SQLSTATES or sqlstate[:2] in NOT_READY_SQLSTATE_CLASSES:
        return await _database_not_ready(request, sqlstate)
    if missing_grant(exc):
        log.error(
            "database_permission_denied",
            error=str(getattr(exc, "orig", exc))[:200],
            hint="the service's login role is not a member of consent_api: GRANT consent_api "
            "TO it (README, Operations)",
        )
        return _unavailable("the database refuses this service's role what it needs")
    log_unexpected(exc)
    return internal_error_response()


def database_unreachable(exc: BaseException) -> bool:
    """Whether `exc` is the database being away (answered 503 `unavailable`), not a fault."""
    if isinstance(exc, DATABASE_UNAVAILABLE):
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    sqlstate = getattr(getattr(exc, "orig", exc), "sqlstate", None) or ""
    return isinstance(sqlstate, str) and sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """Any other error SQLAlchemy raised: the database being away or not ready is a 503;
    anything else is a fault of ours (500, logged with its traceback)."""
    assert isinstance(exc, sqlalchemy.exc.DBAPIError)
    if exc.connection_invalidated:
        return await _database_unavailable(request, exc)
    return await _by_sqlstate(request, exc, str(getattr(exc.orig, "sqlstate", "") or ""))


async def _postgres_error(request: Request, exc: Exception) -> JSONResponse:
    """An error asyncpg raised itself (the event writer uses it without SQLAlchemy)."""
    assert isinstance(exc, asyncpg.PostgresError)
    return await _by_sqlstate(request, exc, str(exc.sqlstate or ""))


def install_database_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(sqlalchemy.exc.DBAPIError, _database_error)
    app.add_exception_handler(asyncpg.PostgresError, _postgres_error)
    for kind in DATABASE_UNAVAILABLE:
        app.add_exception_handler(kind, _database_unavailable)

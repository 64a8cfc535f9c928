"""The banner API: record consent events, answer a subject's current state."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request, Response, status
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from service.banner.events import (
    USER_AGENT_MAX,
    ConsentEventIn,
    ConsentRecord,
    EventType,
    Signal,
    apply_signals,
    cap,
    decision_status,
    expiry,
    record_from_row,
    resolve_choices,
)
from service.banner.state import ConsentState, current_state
from service.banner.writer import EventWriter, NewEvent
from service.consent_schema.routes import PropertyName
from service.consent_schema.versions import PublishedVersion, SchemaCatalog
from service.core.errors import (
    Conflict,
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
    problem_responses,
    validation_problem_detail,
)
from service.core.hashing import Hasher
from service.core.hot_routes import hot

router = APIRouter(prefix="/v1/properties/{property}", tags=["banner"])

MAX_BODY_BYTES = 32 * 1024
ACCEPTED_MEDIA_TYPES = {"application/json", "text/plain"}


async def read_event(request: Request, headers: dict[bytes, bytes]) -> ConsentEventIn:
    """The event body, as JSON or as the `text/plain` that `navigator.sendBeacon` sends."""
    content_type = headers.get(b"content-type", b"application/json").decode("latin-1")
    media_type = content_type.split(";")[0].strip()
    if media_type.lower() not in ACCEPTED_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"send the event as application/json or text/plain, not {media_type[:100]!r}"
        )
    declared = headers.get(b"content-length", b"")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"an event body is at most {MAX_BODY_BYTES} bytes")
    body = await read_body(request.receive)
    try:
        return ConsentEventIn.model_validate_json(body)
    except ValidationError as exc:
        detail, errors = validation_problem_detail(list(exc.errors()), prefix=("body",))
        raise Unprocessable(detail, extra={"errors": errors}) from None


async def read_body(receive: Receive) -> bytes:
    """The body, read straight from the ASGI messages (the server stops at a declared length;
    a chunked body is counted as it streams)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"an event body is at most {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def record_json(event: NewEvent, version: PublishedVersion) -> bytes:
    """The ConsentRecord of a just-stored event, serialised straight from the values this code
    computed (the hot path: no model to build and validate again). Same fields and formats as
    ConsentRecord; a test compares the two."""
    event_type = EventType(event.event_type)
    status = decision_status(event_type, event.effective, version.optional)
    return orjson.dumps(
        {
            "event_id": event.event_id,
            "subject_id": event.subject_id,
            "property": event.property,
            "event_type": event.event_type,
            "schema_version": event.schema_version,
            "recorded_at": event.recorded_at,
            "choices": event.choices,
            "effective": event.effective,
            "signals": {"gpc": event.gpc, "dnt": event.dnt, "applied": event.signals_applied},
            "status": status.value if status else None,
            "expires_at": expiry(event.recorded_at, version.ttl_days, event_type),
        },
        option=orjson.OPT_UTC_Z,
    )


EXISTING = text(
    """
    SELECT event_id, subject_id, property, event_type, schema_version, choices, effective,
           gpc, dnt, signals_applied, recorded_at, request_hash
    FROM consent_events WHERE event_id = :event_id
    """
)

EVENT_BODY_SCHEMA: dict[str, Any] = {"$ref": "#/components/schemas/ConsentEventIn"}


@router.post(
    "/consent-events",
    summary="Record one consent event",
    status_code=status.HTTP_201_CREATED,
    response_model=ConsentRecord,
    responses={
        200: {"model": ConsentRecord, "description": "A retry of a stored event: the original"},
        **problem_responses(404, 409, 413, 415, 422, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The event, as JSON; also accepted as text/plain (sendBeacon).",
            "content": {
                "application/json": {"schema": EVENT_BODY_SCHEMA},
                "text/plain": {"schema": EVENT_BODY_SCHEMA},
            },
        }
    },
)
@hot
async def record_consent_event(property: PropertyName, request: Request) -> Response:
    # The hot path: no database session (the catalog is cached, the writer has its own
    # connection), no dependency beyond the path parameter.
    state = request.app.state
    catalog: SchemaCatalog = state.catalog
    headers = dict(request.scope["headers"])  # one pass; the names are lower-case bytes
    event = await read_event(request, headers)
    current = await catalog.state(property)
    if event.schema_version > current.current_version:
        # The cached pointer may lag a publish made by another process: ask once more.
        current = await catalog.state(property, fresh=True)
        if event.schema_version > current.current_version:
            raise Unprocessable(
                f"schema_version {event.schema_version} is newer than the current version "
                f"{current.current_version} of {property!r}",
                extra={"errors": [{"pointer": "/body/schema_version", "detail": "not published"}]},
            )
    version = await catalog.version(property, event.schema_version)
    optional = version.optional
    choices = resolve_choices(event, required=version.required, optional=optional)

    gpc = headers.get(b"sec-gpc", b"").strip() == b"1" or event.gpc is True
    dnt = headers.get(b"dnt", b"").strip() == b"1"
    honoured = version.honours
    applied = [
        s for s, present in ((Signal.GPC, gpc), (Signal.DNT, dnt)) if present and honoured[s.value]
    ]

    hasher: Hasher = state.hasher
    client = request.scope.get("client")
    address = state.client_address(client[0] if client else None, request.scope["headers"])
    user_agent = headers.get(b"user-agent")
    new = NewEvent(
        event_id=event.event_id or uuid.uuid4(),
        property=property,
        subject_id=event.subject_id,
        event_type=event.event_type.value,
        schema_version=event.schema_version,
        choices=choices,
        effective=apply_signals(choices, optional=optional, applied=applied),
        gpc=gpc,
        dnt=dnt,
        signals_applied=[s.value for s in applied],
        ip_hash=hasher.ip_normalised(address) if address is not None else None,
        user_hash=hasher.user(event.user_id) if event.user_id is not None else None,
        hash_key_id=hasher.current.key_id,
        user_agent=(
            cap(user_agent.decode("latin-1"), USER_AGENT_MAX) if user_agent is not None else None
        ),
        page_url=event.page_url,
        tcf_string=event.tcf_string,
        gpp_string=event.gpp_string,
        request_hash=event.request_hash(property),
        recorded_at=state.clock(),
    )
    writer: EventWriter = state.writer
    if await writer.write(new):
        return Response(
            record_json(new, version),
            status_code=status.HTTP_201_CREATED,
            media_type="application/json",
        )
    return await _replay(state.engine, catalog, new)


async def _replay(engine: AsyncEngine, catalog: SchemaCatalog, new: NewEvent) -> Response:
    """The same event_id again: the original record for a retry, 409 for a different event."""
    async with engine.connect() as connection:
        existing = (await connection.execute(EXISTING, {"event_id": new.event_id})).one()
    if existing.request_hash != new.request_hash:
        raise Conflict(
            f"event_id {new.event_id} is already recorded with a different body; "
            "use a new event_id for a new event"
        )
    version = await catalog.version(existing.property, existing.schema_version)
    record = record_from_row(existing, optional=version.optional, ttl_days=version.ttl_days)
    return Response(record.model_dump_json(), media_type="application/json")


@router.get(
    "/consents/{subject_id}",
    summary="A subject's current consent state",
    response_model=ConsentState,
    responses=problem_responses(404, 422),
)
@hot
async def get_consent_state(
    property: PropertyName,
    subject_id: Annotated[uuid.UUID, Path(description="The id the banner keeps in its cookie.")],
    request: Request,
) -> Response:
    state = await current_state(
        request.app.state.pool,
        request.app.state.catalog,
        property,
        subject_id,
        request.app.state.clock(),
    )
    return Response(
        state.model_dump_json(),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )

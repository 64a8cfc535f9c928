"""The banner API over HTTP: record consent events, answer a subject's current state."""

from __future__ import annotations

import hashlib
from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query, Request, Response, status

from service.banner.bodies import ConsentEventIn, ConsentState
from service.banner.service import (
    current_state,
    new_event,
    signals_present,
    stored_record,
    version_shown,
)
from service.consent_schema.bodies import PropertyName
from service.core.errors import OriginNotAllowed, OutcomeUnknown, TooManyRequests, problem_responses
from service.core.headers import etag_matches, request_headers
from service.core.json_input import CanonicalUUID, StrictJSONRoute, UrlBool, read_json
from service.core.pipeline import body_read_by_hand, hot
from service.ledger.bodies import RecordedEvent
from service.ledger.event import record
from service.ledger.writer import CommitUnconfirmed
from service.state import (
    Catalog,
    ClientAddressOf,
    Clock,
    Decisions,
    Engine,
    EventLimiter,
    Hashing,
    Origins,
    Writer,
)

router = APIRouter(prefix="/v1/properties/{property}", tags=["banner"], route_class=StrictJSONRoute)

MAX_BODY_BYTES = 32 * 1024
ACCEPTED_MEDIA_TYPES = ("application/json", "text/plain")


@router.post(
    "/consent-events",
    summary="Record one consent event",
    status_code=status.HTTP_201_CREATED,
    response_model=RecordedEvent,
    responses={
        200: {"model": RecordedEvent, "description": "A retry of a stored event: the original"},
        **problem_responses(400, 403, 404, 409, 413, 415, 422, 429, 503),
    },
)
@hot
@body_read_by_hand(
    ConsentEventIn,
    media_types=ACCEPTED_MEDIA_TYPES,
    description="The event, as JSON; also accepted as text/plain (sendBeacon).",
)
async def record_consent_event(
    property: PropertyName,
    request: Request,
    catalog: Catalog,
    writer: Writer,
    hasher: Hashing,
    client_address: ClientAddressOf,
    clock: Clock,
    engine: Engine,
    limiter: EventLimiter,
    origins: Origins,
) -> Response:
    # The hot path: no session (the catalog is cached; the writer has its own connection).
    headers = request_headers(request.scope["headers"])  # the names are lower-case bytes
    refused = origins.refuses(headers)
    if refused is not None:
        raise OriginNotAllowed(
            f"a browser on {refused} may not record consent events: that site is not in "
            "CONSENT_CORS_ORIGINS"
        )
    client = request.scope.get("client")
    address = client_address(client[0] if client else None, request.scope["headers"])
    if limiter is not None:  # off by default: see CONSENT_EVENT_RATE_LIMIT
        retry_after = limiter.hit(hasher.ip_normalised(address) if address else "unknown")
        if retry_after is not None:
            raise TooManyRequests(
                f"too many consent events from this client; retry in {retry_after} s",
                retry_after=retry_after,
            )
    event = await read_json(
        request,
        ConsentEventIn,
        limit=MAX_BODY_BYTES,
        media_types=ACCEPTED_MEDIA_TYPES,
        headers=headers,
    )
    version = await version_shown(catalog, property, event)
    new = new_event(
        event,
        property_name=property,
        version=version,
        headers=headers,
        address=address,
        hasher=hasher,
        now=clock(),
    )
    try:
        written = await writer.write(new)
    except CommitUnconfirmed:
        raise OutcomeUnknown(
            f"the database did not confirm the commit in time: event {new.event_id} may or may "
            f'not be recorded; send the same body again with "event_id": "{new.event_id}" '
            "(if it was stored, the retry answers 200 with it; if not, 201)",
            extra={"event_id": str(new.event_id)},
        ) from None
    if written.created:
        body = record(new, optional=version.optional, ttl_days=version.ttl_days)
        body["receipt"] = written.receipt
        body["receipt_proof"] = written.proof.body() if written.proof else None
        return Response(
            orjson.dumps(body, option=orjson.OPT_UTC_Z),
            status_code=status.HTTP_201_CREATED,
            media_type="application/json",
        )
    original = RecordedEvent.model_validate(
        await stored_record(
            engine, catalog, new, event.request_hashes(property, hasher), writer.receipts
        )
    )
    return Response(original.model_dump_json(), media_type="application/json")


@router.get(
    "/consents/{subject_id}",
    summary="A subject's current consent state",
    response_model=ConsentState,
    responses={
        304: {"description": "Not modified (If-None-Match)"},
        **problem_responses(400, 404, 422, 503),
    },
)
@hot
async def get_consent_state(
    property: PropertyName,
    subject_id: Annotated[
        CanonicalUUID, Path(description="The id the banner keeps in its cookie.")
    ],
    request: Request,
    catalog: Catalog,
    clock: Clock,
    decisions: Decisions,
    gpc: Annotated[
        UrlBool,
        Query(
            description="`true`: the page saw `navigator.globalPrivacyControl` (a page cannot set "
            "`Sec-GPC` itself); the header counts too. `true` or `false`, given once."
        ),
    ] = False,
    dnt: Annotated[
        UrlBool,
        Query(
            description='`true`: the page saw `navigator.doNotTrack === "1"`; `DNT: 1` counts '
            "too. `true` or `false`, given once."
        ),
    ] = False,
) -> Response:
    headers = request_headers(request.scope["headers"])
    signals = signals_present(headers, gpc=gpc, dnt=dnt)
    state = await current_state(decisions, catalog, property, subject_id, clock(), signals)
    body = state.model_dump_json().encode()
    # A browser revalidates its copy on every page view (the client fetches with `no-cache`), so
    # a decision entered elsewhere (a DSR withdrawal) is seen at once, and an unchanged state
    # costs a 304. Private: never kept by a shared cache.
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    cache = {"ETag": etag, "Cache-Control": "private, no-cache", "Vary": "Sec-GPC, DNT"}
    if etag_matches(headers.get(b"if-none-match"), etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=cache)
    return Response(body, media_type="application/json", headers=cache)

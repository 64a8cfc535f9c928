"""The control: a bare FastAPI app with the same request model that answers 201 without touching a
database. The benchmark runs it on the same server, workers and load as the service, so the ratio
between the two is the service's cost over the framework's own limit. Its two GETs answer the
schema and a subject's state with the service's bodies and headers, from memory
(bench/gets.py).

`declared` is the second control (`bench/run.py --control declared`): the same request model
written the way FastAPI's tutorial writes an endpoint, as a declared body parameter with a
`response_model`. FastAPI then reads the body only when it is JSON, so it answers sendBeacon's
`text/plain` with 422; it is measured with `bench/ingest_fetch.lua`, whose events are all JSON."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.telemetry import TelemetryConfig
from pydantic import BaseModel

from service.banner.bodies import ConsentEventIn, ConsentState
from service.consent_schema.document import load_document_file
from service.ledger.event import ConsentStatus, EventSource, EventType

# Both controls leave FastAPI's own telemetry off, as the service does.
TELEMETRY_OFF: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}
EVENTS_PATH = "/v1/properties/{property}/consent-events"

app = FastAPI(telemetry=TELEMETRY_OFF)


@app.post(EVENTS_PATH, status_code=201)
async def record(property: str, request: Request) -> Response:
    event = ConsentEventIn.model_validate_json(await request.body())
    body = (
        f'{{"event_id":"{event.event_id or uuid.uuid4()}","subject_id":"{event.subject_id}",'
        f'"property":"{property}","event_type":"{event.event_type.value}",'
        f'"schema_version":{event.schema_version},"recorded_at":"{datetime.now(UTC).isoformat()}"}}'
    )
    return Response(body, status_code=201, media_type="application/json")


# The same document the service serves, so both answers weigh the same.
_DOCUMENT = load_document_file(
    Path(__file__).resolve().parents[1] / "examples/schemas/itsailor.yaml"
)
SCHEMA_BODY = json.dumps(
    {"property": "itsailor", "version": 1, "content": _DOCUMENT.model_dump(mode="json")}
).encode()


@app.get("/v1/properties/{property}/schema")
async def schema(property: str) -> Response:
    return Response(
        SCHEMA_BODY, media_type="application/json", headers={"Cache-Control": "public, max-age=60"}
    )


_CHOICES = {"necessary": True, "functional": False, "analytics": True, "marketing": False}


@app.get("/v1/properties/{property}/consents/{subject_id}")
async def state(property: str, subject_id: uuid.UUID) -> Response:
    """A state of the service's shape and size, with its ETag and cache headers; no database."""
    now = datetime.now(UTC)
    body = ConsentState(
        property=property, subject_id=subject_id, status=ConsentStatus.PARTIALLY_GIVEN,
        event_type=EventType.SAVE_SELECTION, source=EventSource.BANNER, choices=_CHOICES,
        effective=_CHOICES, signals_applied=[], schema_version=1, current_version=1,
        last_material_version=1, decided_at=now, expires_at=now, needs_reprompt=False,
        reprompt_reasons=[],
    ).model_dump_json().encode()  # fmt: skip
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache", "Vary": "Sec-GPC, DNT"}
    return Response(body, media_type="application/json", headers=headers)


class Recorded(BaseModel):
    """The fields the first control's answer carries."""

    event_id: uuid.UUID
    subject_id: uuid.UUID
    property: str
    event_type: EventType
    schema_version: int
    recorded_at: datetime


declared = FastAPI(telemetry=TELEMETRY_OFF)


@declared.post(EVENTS_PATH, status_code=201, response_model=Recorded)
async def record_declared(property: str, event: ConsentEventIn) -> Recorded:
    return Recorded(
        event_id=event.event_id or uuid.uuid4(), subject_id=event.subject_id, property=property,
        event_type=event.event_type, schema_version=event.schema_version,
        recorded_at=datetime.now(UTC),
    )  # fmt: skip

"""The control: a bare FastAPI app with the same request model that answers 201 without touching a
database. The benchmark runs it on the same server, workers and load as the service, so the ratio
between the two is the service's cost over the framework's own limit."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI, Request, Response

from service.banner.bodies import ConsentEventIn
from service.consent_schema.document import load_document_file

app = FastAPI(
    telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
)


@app.post("/v1/properties/{property}/consent-events", status_code=201)
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

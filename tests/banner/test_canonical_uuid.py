"""A UUID a client sends has one spelling, the one the service writes (lowercase 8-4-4-4-12, as
`crypto.randomUUID()` and `str(uuid.UUID)` write it): evidence names one id one way
(service/core/json_input.py, `CanonicalUUID`)."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from service.banner.bodies import ConsentEventIn
from service.core.hashing import HashKey
from service.core.json_input import UUID_FORM
from tests.factories import event, example, published

EVENTS = "/v1/properties/itsailor/consent-events"
STATE = "/v1/properties/itsailor/consents"
ID = uuid.UUID("0b9f6f7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b")
CANONICAL = str(ID)

# Every one of these is the same id to pydantic's uuid.UUID (or a near miss of the form).
LAX = {
    "uppercase": CANONICAL.upper(),
    "mixed case": "0B9f6f7e-1c2d-4E5F-8a9b-0c1d2e3f4a5B",
    "no hyphens": ID.hex,
    "no hyphens, uppercase": ID.hex.upper(),
    "braces": "{" + CANONICAL + "}",
    "urn": ID.urn,
    "uuid: prefix": "uuid:" + CANONICAL,
    "leading space": " " + CANONICAL,
    "trailing space": CANONICAL + " ",
    "trailing newline": CANONICAL + "\n",
    "groups 9-3-4-4-12": "0b9f6f7e1-c2d-4e5f-8a9b-0c1d2e3f4a5b",
    "groups 8-4-4-4-11": CANONICAL[:-1],
    "groups 8-4-4-4-13": CANONICAL + "0",
    "hyphens elsewhere": "0b9f6f7e1c2d-4e5f-8a9b-0c1d-2e3f4a5b",
    "fullwidth digit": "\uff10" + CANONICAL[1:],
    "not hex": "0b9f6f7e-1c2d-4e5f-8a9b-0c1d2e3f4a5g",
}
NOT_TEXT: dict[str, Any] = {"number": 12, "list": [CANONICAL], "object": {"id": CANONICAL}}


@pytest.fixture
async def schemas(db_url: str) -> None:
    await published(db_url, example("itsailor"))


def assert_refused(response: httpx.Response, pointer: str, spelling: object) -> None:
    assert response.status_code == 422, (spelling, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    detail = f"Input should be {UUID_FORM}"
    assert {"pointer": pointer, "detail": detail} in problem["errors"]
    assert f"{pointer}: {detail}" in problem["detail"]


@pytest.mark.usefixtures("schemas")
@pytest.mark.parametrize("field", ["subject_id", "event_id"])
async def test_a_body_id_in_another_form_is_422_and_stores_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, field: str
) -> None:
    for spelling in [*LAX.values(), *NOT_TEXT.values()]:
        response = await client.post(EVENTS, json={**event(), field: spelling})
        assert_refused(response, f"/body/{field}", spelling)
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 0


@pytest.mark.usefixtures("schemas")
async def test_the_canonical_form_is_recorded_and_read_back_as_sent(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    event_id = str(uuid.uuid4())
    body = event(subject_id=ID, event_id=event_id)
    created = await client.post(EVENTS, json=body)
    assert created.status_code == 201, created.text
    assert (created.json()["subject_id"], created.json()["event_id"]) == (CANONICAL, event_id)
    retried = await client.post(EVENTS, json=body)  # a retry names the same event the same way
    assert retried.status_code == 200, retried.text
    assert retried.json()["event_id"] == event_id
    stored = await db.fetchval("SELECT subject_id::text FROM consent_events")
    assert stored == CANONICAL

    state = await client.get(f"{STATE}/{CANONICAL}")
    assert state.status_code == 200, state.text
    assert state.json()["subject_id"] == CANONICAL
    assert state.json()["status"] == "given"


@pytest.mark.usefixtures("schemas")
async def test_a_state_path_in_another_form_is_422(client: httpx.AsyncClient) -> None:
    for spelling in LAX.values():
        response = await client.get(f"{STATE}/{quote(spelling, safe='')}")
        assert_refused(response, "/path/subject_id", spelling)


def test_python_code_may_still_pass_a_uuid_and_the_request_hash_is_unchanged() -> None:
    """Only text is held to the form: a uuid.UUID from Python code is taken as it is, and an
    event serialises (for its request hash) exactly as with pydantic's own uuid.UUID."""
    text = ConsentEventIn.model_validate(
        {"subject_id": CANONICAL, "event_id": CANONICAL, "event_type": "accept-all",
         "schema_version": 1}
    )  # fmt: skip
    value = ConsentEventIn.model_validate(
        {"subject_id": ID, "event_id": ID, "event_type": "accept-all", "schema_version": 1}
    )
    assert text.subject_id == value.subject_id == ID
    assert isinstance(text.subject_id, uuid.UUID)
    key = HashKey.from_secret(SecretStr("k" * 40))
    assert text.request_hash("itsailor", key) == value.request_hash("itsailor", key)
    assert text.model_dump_json(include={"subject_id"}) == f'{{"subject_id":"{CANONICAL}"}}'

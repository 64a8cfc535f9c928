"""Material changes announced ahead (docs/policies.md): itsailor announces material changes "at
least 30 days before they take effect". A version published with `effective_at` is not served
before that instant and is served, with a re-prompt, from it on, by every process."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from service.app import create_app
from service.consent_schema.document import document_content
from service.consent_schema.service import CURRENT_POINTER_TTL_SECONDS
from service.ledger.writer import RECORD_SQL, batch_json
from tests.conftest import make_settings
from tests.factories import api_key, bearer, event, example, published
from tests.ledger.test_definition import new_event

SCHEMA = "/v1/properties/itsailor/schema"


def changed_content() -> dict[str, object]:
    content = document_content(example("itsailor"))
    content["categories"][2]["description"] = "Plausible Analytics goes live."
    return content


@contextlib.asynccontextmanager
async def two_replicas(db_url: str, tmp_path: Path) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two instances of the service on one database, each with its own caches."""
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for i in range(2):
            app = create_app(make_settings(db_url, tmp_path / str(i)))
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
            clients.append(await stack.enter_async_context(client))
        yield clients


async def test_a_version_takes_effect_at_its_announced_instant_on_every_replica(
    db_url: str, tmp_path: Path
) -> None:
    await published(db_url, example("itsailor"))
    async with two_replicas(db_url, tmp_path) as replicas:
        await _announced_ahead(replicas, db_url)


async def _announced_ahead(replicas: list[httpx.AsyncClient], db_url: str) -> None:
    writer = bearer(await api_key(db_url, "schemas:write"))
    first, second = replicas
    subject = uuid.uuid4()
    assert (
        await first.post(
            "/v1/properties/itsailor/consent-events", json=event("accept-all", subject_id=subject)
        )
    ).status_code == 201
    for client in replicas:  # both have the version in force cached
        assert (await client.get(SCHEMA)).json()["version"] == 1

    at = datetime.now(UTC) + timedelta(seconds=4)
    published_answer = await first.post(
        f"{SCHEMA}/versions",
        json={"material": True, "content": changed_content(), "effective_at": at.isoformat()},
        headers=writer,
    )
    assert published_answer.status_code == 201, published_answer.text
    assert published_answer.json()["effective_at"] == at.isoformat().replace("+00:00", "Z")

    # Every replica learns of the pending version within its pointer cache's second.
    await asyncio.sleep(CURRENT_POINTER_TTL_SECONDS + 0.1)
    before = [await client.get(SCHEMA) for client in replicas]
    assert [answer.json()["version"] for answer in before] == [1, 1]
    for answer in before:  # no cache may keep version 1 past the instant
        assert int(answer.headers["cache-control"].rsplit("=", 1)[1]) <= 3  # not 60
    listed = await second.get(f"{SCHEMA}/versions")
    listing = listed.json()
    assert (listing["current_version"], listing["pending_version"]) == (1, 2)
    # The list names the current version too: kept no longer than the schema itself.
    assert int(listed.headers["cache-control"].rsplit("=", 1)[1]) <= 3
    too_early = await second.post(
        "/v1/properties/itsailor/consent-events", json=event("accept-all", schema_version=2)
    )
    assert too_early.status_code == 422
    state = (await second.get(f"/v1/properties/itsailor/consents/{subject}")).json()
    assert state["needs_reprompt"] is False

    await asyncio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()) + 0.05)
    after = [(await client.get(SCHEMA)).json() for client in replicas]
    assert [body["version"] for body in after] == [2, 2]
    for client in replicas:
        state = (await client.get(f"/v1/properties/itsailor/consents/{subject}")).json()
        assert (state["needs_reprompt"], state["reprompt_reasons"]) == (True, ["schema-changed"])
    listing = (await first.get(f"{SCHEMA}/versions")).json()
    assert (listing["current_version"], listing["pending_version"]) == (2, None)


async def test_a_pending_version_can_be_cancelled_and_blocks_another_until_then(
    client: httpx.AsyncClient, db_url: str
) -> None:
    await published(db_url, example("itsailor"))
    writer = bearer(await api_key(db_url, "schemas:write"))
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    body = {"material": True, "content": changed_content(), "effective_at": later}
    assert (await client.post(f"{SCHEMA}/versions", json=body, headers=writer)).status_code == 201

    # The rule: one pending version at a time; publishing another (now or later) waits for it.
    again = await client.post(
        f"{SCHEMA}/versions", json=body | {"effective_at": None}, headers=writer
    )
    assert again.status_code == 409
    assert "takes effect at" in again.json()["detail"]
    assert "cancel it" in again.json()["detail"]

    in_force = await client.post(f"{SCHEMA}/versions/1/cancellation", headers=writer)
    assert in_force.status_code == 409  # only a version not yet in effect
    cancelled = await client.post(f"{SCHEMA}/versions/2/cancellation", headers=writer)
    assert cancelled.status_code == 200
    assert in_force.json()["detail"] == (
        "version 1 of 'itsailor' has taken effect: only a version that has not taken effect yet "
        "can be cancelled"
    )
    twice = await client.post(f"{SCHEMA}/versions/2/cancellation", headers=writer)
    assert twice.status_code == 409
    assert twice.json()["detail"].startswith("version 2 of 'itsailor' was cancelled already, at ")
    listing = (await client.get(f"{SCHEMA}/versions")).json()
    assert (
        listing["current_version"],
        listing["pending_version"],
        listing["cancelled_versions"],
    ) == (1, None, [2])
    assert (await client.get(SCHEMA)).json()["version"] == 1

    now = await client.post(
        f"{SCHEMA}/versions", json=body | {"effective_at": None}, headers=writer
    )
    assert now.status_code == 201
    assert now.json()["version"] == 3  # numbers are never reused
    assert (await client.get(SCHEMA)).json()["version"] == 3
    reader = bearer(await api_key(db_url, "dsr:read"))
    assert (
        await client.post(f"{SCHEMA}/versions/3/cancellation", headers=reader)
    ).status_code == 403


async def test_an_event_on_a_version_cancelled_before_it_took_effect_is_refused(
    client: httpx.AsyncClient, db_url: str
) -> None:
    """Version 2 was announced and cancelled, version 3 is current: no banner ever showed 2, so
    an event naming it is a 422 (an older version in force, 1, is still recorded as a late
    beacon), and the database refuses such an event from the service's role as well."""
    await published(db_url, example("itsailor"))
    writer = bearer(await api_key(db_url, "schemas:write"))
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    body = {"material": True, "content": changed_content(), "effective_at": later}
    assert (await client.post(f"{SCHEMA}/versions", json=body, headers=writer)).status_code == 201
    pending = await client.post(
        "/v1/properties/itsailor/consent-events", json=event(schema_version=2)
    )
    assert pending.status_code == 422
    assert pending.json()["detail"].startswith(
        "schema_version 2 is newer than the current version 1 of 'itsailor' (version 2 takes "
        "effect at "
    )
    # The field's own error says the same, not "not published" (a review's finding).
    [field] = pending.json()["errors"]
    assert field["detail"].startswith("newer than the current version 1 (version 2 takes effect")
    assert (await client.post(f"{SCHEMA}/versions/2/cancellation", headers=writer)).is_success
    now = body | {"effective_at": None}
    assert (await client.post(f"{SCHEMA}/versions", json=now, headers=writer)).status_code == 201

    events = "/v1/properties/itsailor/consent-events"
    refused = await client.post(events, json=event(schema_version=2))
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"] == (
        "schema_version 2 of 'itsailor' was cancelled before it took effect: no banner showed it"
    )
    assert refused.json()["errors"] == [{"pointer": "/body/schema_version", "detail": "cancelled"}]
    assert (await client.post(events, json=event(schema_version=1))).status_code == 201
    assert (await client.post(events, json=event(schema_version=3))).status_code == 201

    service = await asyncpg.connect(db_url)
    try:
        row = new_event(property="itsailor", schema_version=2, recorded_at=datetime.now(UTC))
        with pytest.raises(asyncpg.ForeignKeyViolationError, match="was not in force"):
            await service.fetch(RECORD_SQL, batch_json([row]), None, None)
    finally:
        await service.close()

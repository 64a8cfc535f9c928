"""GET /v1/properties/{property}/consents/{subject_id}: state from the latest decision."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from service.consent_schema.document import ConsentSchemaDocument
from service.core.pipeline import ConsentAPI
from service.state import of as services
from tests.factories import APPLYING, Clock, applying_example, event, example, published

EVENTS = "/v1/properties/itsailor/consent-events"
STATE = "/v1/properties/itsailor/consents"


@pytest.fixture
async def clock(app: ConsentAPI, db_url: str) -> Clock:
    await published(db_url, example("itsailor"))
    clock = Clock()
    services(app).clock = clock
    return clock


async def state(client: httpx.AsyncClient, subject: uuid.UUID) -> dict[str, object]:
    response = await client.get(f"/v1/properties/itsailor/consents/{subject}")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "private, no-cache"
    # Unchanged, a revalidation costs a 304; a new decision changes the tag.
    again = await client.get(
        f"/v1/properties/itsailor/consents/{subject}",
        headers={"If-None-Match": response.headers["etag"]},
    )
    assert (again.status_code, again.content) == (304, b"")
    return dict(response.json())


async def decide(
    client: httpx.AsyncClient, subject: uuid.UUID, event_type: str, **fields: Any
) -> None:
    response = await client.post(EVENTS, json=event(event_type, subject_id=subject, **fields))
    assert response.status_code == 201, response.text


async def bump(db_url: str, *, material: bool, label: str) -> None:
    data = example("itsailor").model_dump(mode="json")
    data["categories"][0]["label"] = label
    await published(db_url, ConsentSchemaDocument.model_validate(data), material=material)


@pytest.mark.usefixtures("clock")
async def test_no_decision(client: httpx.AsyncClient) -> None:
    subject = uuid.uuid4()
    current = await state(client, subject)
    assert current["status"] == "none"
    assert current["needs_reprompt"] is True
    assert current["reprompt_reasons"] == ["no-decision"]
    assert current["effective"] == {
        "necessary": True,
        "functional": False,
        "analytics": False,
        "marketing": False,
    }
    assert (current["schema_version"], current["decided_at"], current["expires_at"]) == (
        None,
        None,
        None,
    )


async def test_given_then_expired_after_the_ttl(client: httpx.AsyncClient, clock: Clock) -> None:
    subject = uuid.uuid4()
    decided_at = clock.now
    await decide(client, subject, "accept-all")
    clock.advance(days=364, hours=23)
    current = await state(client, subject)
    assert current["status"] == "given"
    assert current["needs_reprompt"] is False
    assert current["decided_at"] == decided_at.isoformat().replace("+00:00", "Z")
    assert current["expires_at"] == (decided_at + timedelta(days=365)).isoformat().replace(
        "+00:00", "Z"
    )
    assert current["effective"] == {
        "necessary": True,
        "functional": True,
        "analytics": True,
        "marketing": True,
    }

    clock.advance(hours=1)
    expired = await state(client, subject)
    assert expired["status"] == "expired"
    assert expired["reprompt_reasons"] == ["expired"]
    assert expired["effective"] == {
        "necessary": True,
        "functional": False,
        "analytics": False,
        "marketing": False,
    }
    assert expired["schema_version"] == 1


async def test_schema_change_only_after_a_material_publish(
    client: httpx.AsyncClient, clock: Clock, db_url: str, app: ConsentAPI
) -> None:
    subject = uuid.uuid4()
    await decide(client, subject, "save-selection", categories={"analytics": True})
    await bump(db_url, material=False, label="Essential")
    services(app).catalog.forget_current("itsailor")  # published by another process
    wording = await state(client, subject)
    assert (wording["current_version"], wording["last_material_version"]) == (2, 1)
    assert wording["status"] == "partially-given"
    assert wording["needs_reprompt"] is False

    await bump(db_url, material=True, label="Needed")
    services(app).catalog.forget_current("itsailor")
    changed = await state(client, subject)
    assert (changed["current_version"], changed["last_material_version"]) == (3, 3)
    assert changed["needs_reprompt"] is True
    assert changed["reprompt_reasons"] == ["schema-changed"]
    assert changed["schema_version"] == 1
    # Until the person answers again, only the required categories apply (the page blocks the
    # optional scripts meanwhile); the decision itself is kept and shown.
    assert changed["effective"] == {
        "necessary": True,
        "functional": False,
        "analytics": False,
        "marketing": False,
    }
    assert (changed["status"], changed["choices"]) == (
        "partially-given",
        {"necessary": True, "functional": False, "analytics": True, "marketing": False},
    )

    await decide(client, subject, "accept-all", schema_version=3)
    settled = await state(client, subject)
    assert (settled["status"], settled["needs_reprompt"], settled["schema_version"]) == (
        "given",
        False,
        3,
    )


@pytest.mark.usefixtures("clock")
async def test_withdraw_and_re_prompt(client: httpx.AsyncClient) -> None:
    subject = uuid.uuid4()
    await decide(client, subject, "accept-all")
    await decide(client, subject, "withdraw")
    withdrawn = await state(client, subject)
    assert withdrawn["status"] == "withdrawn"
    assert withdrawn["effective"] == {
        "necessary": True,
        "functional": False,
        "analytics": False,
        "marketing": False,
    }
    await decide(client, subject, "re-prompt")
    assert (await state(client, subject))[
        "status"
    ] == "withdrawn"  # showing the banner decides nothing


@pytest.mark.usefixtures("clock")
async def test_a_signal_applies_while_present_and_never_changes_the_stored_decision(
    client: httpx.AsyncClient, db_url: str
) -> None:
    await published(db_url, applying_example())  # applies GPC and DNT while present
    subject = uuid.uuid4()
    all_on = {"necessary": True, "functional": True, "analytics": True, "marketing": True}
    all_off = {"necessary": True, "functional": False, "analytics": False, "marketing": False}
    response = await client.post(
        f"/v1/properties/{APPLYING}/consent-events",
        json=event("accept-all", subject_id=subject),
        headers={"Sec-GPC": "1"},
    )
    assert response.status_code == 201
    assert response.json()["effective"] == all_off  # the record: the signal applied then

    with_signal = [
        (
            await client.get(
                f"/v1/properties/{APPLYING}/consents/{subject}", headers={"Sec-GPC": "1"}
            )
        ).json(),
        (
            await client.get(f"/v1/properties/{APPLYING}/consents/{subject}?gpc=true")
        ).json(),  # what a page reports
        (
            await client.get(f"/v1/properties/{APPLYING}/consents/{subject}?dnt=true")
        ).json(),  # itsailor honours DNT too
    ]
    for current in with_signal:
        assert current["status"] == "refused"
        assert current["effective"] == all_off
        assert current["choices"] == all_on  # the decision as the person made it
    assert [current["signals_applied"] for current in with_signal] == [["gpc"], ["gpc"], ["dnt"]]

    # The signal is gone: the person's own decision applies again.
    current = (await client.get(f"/v1/properties/{APPLYING}/consents/{subject}")).json()
    assert (current["status"], current["effective"], current["signals_applied"]) == (
        "given",
        all_on,
        [],
    )


@pytest.mark.usefixtures("clock")
async def test_a_signal_the_policy_does_not_honour_changes_nothing(
    client: httpx.AsyncClient, db_url: str
) -> None:
    await published(db_url, example("ailabrix"))  # GPC honoured, DNT not
    subject = uuid.uuid4()
    url = f"/v1/properties/ailabrix/consents/{subject}"
    assert (
        await client.post(
            "/v1/properties/ailabrix/consent-events", json=event("accept-all", subject_id=subject)
        )
    ).status_code == 201
    ignored = (await client.get(url, headers={"DNT": "1"})).json()
    assert (ignored["effective"]["analytics"], ignored["signals_applied"]) == (True, [])
    honoured = (await client.get(url, headers={"Sec-GPC": "1"})).json()
    assert (honoured["effective"]["analytics"], honoured["signals_applied"]) == (False, ["gpc"])
    invalid = await client.get(url + "?gpc=perhaps")
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["pointer"] == "/query/gpc"


@pytest.mark.usefixtures("clock")
@pytest.mark.parametrize(
    ("query", "pointer", "detail"),
    [
        ("gpc=yes", "/query/gpc", "Input should be true or false"),
        ("gpc=1", "/query/gpc", "Input should be true or false"),
        ("gpc=on", "/query/gpc", "Input should be true or false"),
        ("gpc=True", "/query/gpc", "Input should be true or false"),
        ("gpc=", "/query/gpc", "Input should be true or false"),
        ("dnt=1", "/query/dnt", "Input should be true or false"),
        ("dnt=0", "/query/dnt", "Input should be true or false"),
        ("gpc=false&gpc=true", "/query/gpc", "must be given once, not 2 times"),
        ("gpc=true&gpc=true", "/query/gpc", "must be given once, not 2 times"),
        ("dnt=true&gpc=true&dnt=true&dnt=true", "/query/dnt", "must be given once, not 3 times"),
    ],
)
async def test_a_signal_in_the_query_is_true_or_false_given_once(
    client: httpx.AsyncClient, query: str, pointer: str, detail: str
) -> None:
    """The client sends `?gpc=true` / `?dnt=true` (docs/banner.md, "Signals"); `yes`, `1` or a
    repeat (of which the last used to win) is a question the service should not guess at."""
    response = await client.get(f"{STATE}/{uuid.uuid4()}?{query}")
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"] == [{"pointer": pointer, "detail": detail}]
    assert response.json()["detail"] == f"{pointer}: {detail}"


@pytest.mark.usefixtures("clock")
async def test_a_signal_in_the_query_may_be_false(client: httpx.AsyncClient, db_url: str) -> None:
    await published(db_url, applying_example())
    url = f"/v1/properties/{APPLYING}/consents/{uuid.uuid4()}"
    for query, applied in (("gpc=false&dnt=false", []), ("gpc=true&dnt=false", ["gpc"])):
        response = await client.get(f"{url}?{query}")
        assert (response.status_code, response.json()["signals_applied"]) == (200, applied)


@pytest.mark.usefixtures("clock")
async def test_state_is_per_property_and_validates_ids(
    client: httpx.AsyncClient, db_url: str
) -> None:
    await published(db_url, example("ailabrix"))
    subject = uuid.uuid4()
    await decide(client, subject, "accept-all")
    other = (await client.get(f"/v1/properties/ailabrix/consents/{subject}")).json()
    assert other["status"] == "none"
    assert (await client.get("/v1/properties/itsailor/consents/not-a-uuid")).status_code == 422
    assert (await client.get(f"/v1/properties/nosuch/consents/{subject}")).status_code == 404


@pytest.mark.usefixtures("clock")
async def test_if_none_match_is_read_as_a_list_of_tags(client: httpx.AsyncClient) -> None:
    """RFC 9110, section 13.1.2: `*` matches any current state, a weak tag its strong twin, and
    a tag only contained in another (the text inside a longer tag) is no match: compared as a
    substring, `*` was a 200 and `"x<tag>"` a 304."""
    url = f"{STATE}/{uuid.uuid4()}"
    etag = (await client.get(url)).headers["etag"]
    for sent, expected in (
        ("*", 304),
        (f'"other", {etag}', 304),
        (f"W/{etag}", 304),
        (f'"x{etag[1:]}', 200),
        (etag[1:-1], 200),
    ):
        answer = await client.get(url, headers={"If-None-Match": sent})
        assert answer.status_code == expected, sent
        assert answer.headers["etag"] == etag

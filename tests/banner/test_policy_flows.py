"""End to end, as each seed policy promises its visitors (../shared/seeds/)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import asyncpg
import httpx

from service.core.pipeline import ConsentAPI
from service.state import of as services
from tests.conftest import CLIENT_IP
from tests.factories import Clock, api_key, bearer, event, example, published

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"


async def test_itsailor_accept_withdraw_material_bump_reprompt_select(
    client: httpx.AsyncClient, app: ConsentAPI, db_url: str, db: asyncpg.Connection
) -> None:
    """itsailor.io: four categories, GPC and DNT honoured, 12-month choice, and "an audit row per
    decision with event type, schema version, categories, user agent, keyed hash of the IP,
    timestamp"."""
    await published(db_url, example("itsailor"))
    clock = Clock()
    services(app).clock = clock
    subject = uuid.uuid4()
    events = "/v1/properties/itsailor/consent-events"
    headers = {"User-Agent": UA}
    state_url = f"/v1/properties/itsailor/consents/{subject}"

    first = await client.post(events, json=event("accept-all", subject_id=subject), headers=headers)
    assert first.json()["status"] == "given"
    assert first.json()["expires_at"] == (clock.now + timedelta(days=365)).isoformat().replace(
        "+00:00", "Z"
    )

    clock.advance(days=30)
    withdrawn = await client.post(
        events, json=event("withdraw", subject_id=subject), headers=headers
    )
    assert withdrawn.json()["status"] == "withdrawn"
    assert (await client.get(state_url)).json()["status"] == "withdrawn"

    # The policy adds a category: a material change, so every visitor must be asked again.
    key = await api_key(db_url, "schemas:write")
    content = example("itsailor").model_dump(mode="json")
    content["categories"][2]["cookies"] = [{
        "name": "plausible_ignore", "provider": "itsailor.io", "purpose": "Self-hosted analytics opt-out",
        "duration": "Persistent", "party": "first", "storage": "localStorage",
    }]  # fmt: skip
    bumped = await client.post(
        "/v1/properties/itsailor/schema/versions", json={"content": content}, headers=bearer(key)
    )
    assert (bumped.json()["version"], bumped.json()["last_material_version"]) == (2, 2)
    before = (await client.get(state_url)).json()
    assert before["needs_reprompt"] is True
    assert before["reprompt_reasons"] == ["schema-changed"]

    clock.advance(days=1)
    shown = await client.post(
        events, json=event("re-prompt", subject_id=subject, schema_version=2), headers=headers
    )
    assert shown.status_code == 201
    chosen = await client.post(
        events,
        json=event(
            "save-selection", subject_id=subject, schema_version=2, categories={"analytics": True}
        ),
        headers=headers,
    )
    assert chosen.json()["status"] == "partially-given"
    after = (await client.get(state_url)).json()
    assert (after["status"], after["needs_reprompt"], after["schema_version"]) == (
        "partially-given",
        False,
        2,
    )

    # The audit rows the policy promises, one per event, in order.
    rows = await db.fetch(
        "SELECT event_type, schema_version, choices, user_agent, encode(ip_hash, 'hex') AS ip_hash,"
        " hash_key_id, recorded_at"
        " FROM consent_events WHERE subject_id = $1 ORDER BY seq",
        subject,
    )
    assert [(r["event_type"], r["schema_version"]) for r in rows] == [
        ("accept-all", 1), ("withdraw", 1), ("re-prompt", 2), ("save-selection", 2),
    ]  # fmt: skip
    assert json.loads(rows[3]["choices"]) == {
        "necessary": True, "functional": False, "analytics": True, "marketing": False,
    }  # fmt: skip
    for row in rows:
        assert row["user_agent"] == UA
        assert row["ip_hash"] == services(app).hasher.ip(CLIENT_IP)
        assert row["hash_key_id"] == services(app).hasher.current.key_id
    assert [r["recorded_at"] for r in rows] == sorted(r["recorded_at"] for r in rows)


async def test_ailabrix_with_gpc_keeps_analytics_off(
    client: httpx.AsyncClient, app: ConsentAPI, db_url: str, db: asyncpg.Connection
) -> None:
    """ailabrix.com: "If your browser sends a Global Privacy Control (GPC) signal, we treat it as a
    refusal of all non-essential cookies and the analytics category is forced off, regardless of
    any previous click." DNT is not honoured; the choice is kept 6 months."""
    await published(db_url, example("ailabrix"))
    clock = Clock()
    services(app).clock = clock
    subject = uuid.uuid4()
    events = "/v1/properties/ailabrix/consent-events"

    clicked = await client.post(
        events, json=event("accept-all", subject_id=subject), headers={"Sec-GPC": "1"}
    )
    record = clicked.json()
    assert record["choices"] == {"necessary": True, "analytics": True}  # the click, as evidence
    assert record["effective"] == {"necessary": True, "analytics": False}  # what applies
    assert record["signals"] == {"gpc": True, "dnt": False, "applied": ["gpc"]}
    assert record["status"] == "refused"
    assert record["expires_at"] == (clock.now + timedelta(days=180)).isoformat().replace(
        "+00:00", "Z"
    )

    state_url = f"/v1/properties/ailabrix/consents/{subject}"
    state = (await client.get(state_url, headers={"Sec-GPC": "1"})).json()
    assert (state["status"], state["effective"]["analytics"]) == ("refused", False)
    # The signal applies while present: without it, the click stands (docs/banner.md, "Signals").
    state = (await client.get(state_url)).json()
    assert (state["status"], state["effective"]["analytics"]) == ("given", True)

    # "regardless of any previous click": a later selection with GPC (body flag) stays off too.
    again = await client.post(
        events,
        json=event("save-selection", subject_id=subject, categories={"analytics": True}, gpc=True),
    )
    assert again.json()["effective"]["analytics"] is False
    # DNT alone is not honoured by this policy.
    dnt_only = await client.post(events, json=event("accept-all"), headers={"DNT": "1"})
    assert dnt_only.json()["effective"]["analytics"] is True

    row = await db.fetchrow(
        "SELECT gpc, signals_applied, effective FROM consent_events WHERE event_id = $1",
        uuid.UUID(record["event_id"]),
    )
    assert row["gpc"] is True
    assert json.loads(row["signals_applied"]) == ["gpc"]
    assert json.loads(row["effective"])["analytics"] is False

"""Signals as decisions (docs/policies.md, "Signals"): a policy says per signal whether it is only
applied while present (ailabrix: "forced off regardless of any previous click") or recorded as
the person's decision (itsailor: "persist the choice as you would have made it")."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.factories import event, example, published

ITSAILOR = "/v1/properties/itsailor"
AILABRIX = "/v1/properties/ailabrix"


@pytest.fixture(autouse=True)
async def schemas(db_url: str) -> None:
    await published(db_url, example("itsailor"))
    await published(db_url, example("ailabrix"))


async def test_itsailor_records_a_gpc_visitor_as_a_reject_all_from_the_signal(
    client: httpx.AsyncClient,
) -> None:
    """itsailor: "If your browser sends Sec-GPC: 1, we treat that as a Reject-all signal for
    non-essential categories and persist the choice as you would have made it through the
    banner." """
    subject = uuid.uuid4()
    response = await client.post(
        f"{ITSAILOR}/consent-events",
        json=event("reject-all", subject_id=subject, source="signal"),
        headers={"Sec-GPC": "1"},
    )
    assert response.status_code == 201, response.text
    record = response.json()
    assert (record["source"], record["event_type"], record["status"]) == (
        "signal",
        "reject-all",
        "refused",
    )
    assert record["signals"] == {"gpc": True, "dnt": False, "applied": ["gpc"]}  # what decided
    state = (await client.get(f"{ITSAILOR}/consents/{subject}", headers={"Sec-GPC": "1"})).json()
    assert (state["status"], state["source"], state["needs_reprompt"]) == (
        "refused",
        "signal",
        False,
    )


async def test_itsailor_honours_dnt_the_same_way(client: httpx.AsyncClient) -> None:
    """itsailor: "The older Do Not Track (DNT) header is also honoured the same way." """
    response = await client.post(
        f"{ITSAILOR}/consent-events",
        json=event("reject-all", source="signal", dnt=True),
    )
    assert response.status_code == 201, response.text
    assert response.json()["signals"]["applied"] == ["dnt"]


async def test_after_the_signals_refusal_an_explicit_choice_through_the_banner_stands(
    client: httpx.AsyncClient,
) -> None:
    """A signal recorded as a decision is the person's refusal, made once; a later explicit
    opt-in through the banner, signal still on, is a newer decision of the person's own."""
    subject = uuid.uuid4()
    gpc = {"Sec-GPC": "1"}
    await client.post(
        f"{ITSAILOR}/consent-events",
        json=event("reject-all", subject_id=subject, source="signal"),
        headers=gpc,
    )
    clicked = await client.post(
        f"{ITSAILOR}/consent-events", json=event("accept-all", subject_id=subject), headers=gpc
    )
    record = clicked.json()
    assert (record["source"], record["signals"]["applied"], record["status"]) == (
        "banner",
        [],
        "given",
    )
    assert all(record["effective"].values())
    state = (await client.get(f"{ITSAILOR}/consents/{subject}", headers=gpc)).json()
    assert (state["status"], state["signals_applied"]) == ("given", [])


@pytest.mark.parametrize(
    ("prop", "body", "headers", "detail"),
    [
        # No signal present: nothing for the signal to decide.
        (ITSAILOR, {}, {}, "no signal is present that schema version 1 records as a decision"),
        # A signal decision is a refusal.
        (
            ITSAILOR,
            {"event_type": "accept-all"},
            {"Sec-GPC": "1"},
            "a decision from a signal is a reject-all",
        ),
        # ailabrix applies GPC; it does not record it as the person's decision.
        (AILABRIX, {}, {"Sec-GPC": "1"}, "no signal is present that schema version 1 records"),
        # The DSR team's source is not a banner's to claim.
        (ITSAILOR, {"source": "dsr"}, {"Sec-GPC": "1"}, "source"),
    ],
)
async def test_a_decision_from_a_signal_must_be_one(
    client: httpx.AsyncClient,
    prop: str,
    body: dict[str, str],
    headers: dict[str, str],
    detail: str,
) -> None:
    fields: dict[str, Any] = {"source": "signal", **body}
    event_type = fields.pop("event_type", "reject-all")
    response = await client.post(
        f"{prop}/consent-events", json=event(event_type, **fields), headers=headers
    )
    assert response.status_code == 422
    assert detail in response.json()["detail"]
    if "source" in body:
        return
    assert response.json()["errors"][0]["pointer"] == "/body/source"

"""Signals as decisions (docs/policies.md, "Signals"): a policy says per signal whether it is only
applied while present (ailabrix: "forced off regardless of any previous click") or recorded as
the person's decision (itsailor: "persist the choice as you would have made it")."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from service.core.pipeline import ConsentAPI
from service.state import of as services
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
    ("headers", "query", "applied"),
    [({"Sec-GPC": "1"}, "", ["gpc"]), ({"DNT": "1"}, "", ["dnt"]), ({}, "?gpc=true", ["gpc"])],
)
async def test_a_signal_recorded_as_a_decision_stands_for_one_in_the_state_before_it_is_recorded(
    client: httpx.AsyncClient, headers: dict[str, str], query: str, applied: list[str]
) -> None:
    """itsailor treats GPC (and DNT) as a reject-all. Someone who accepted all before their
    browser sent the signal is refused while it is present, whoever asks the state (a site's
    back end, a page whose script has not recorded the signal's reject-all yet), as the client
    would record it; their accept-all is kept, and applies again without the signal."""
    subject = uuid.uuid4()
    accepted = await client.post(
        f"{ITSAILOR}/consent-events", json=event("accept-all", subject_id=subject)
    )
    assert accepted.status_code == 201, accepted.text
    url = f"{ITSAILOR}/consents/{subject}"
    state = (await client.get(url + query, headers=headers)).json()
    assert (state["status"], state["signals_applied"], state["event_type"]) == (
        "refused",
        applied,
        "accept-all",
    )
    assert state["effective"] == {
        "necessary": True, "functional": False, "analytics": False, "marketing": False
    }  # fmt: skip
    assert all(state["choices"].values())
    without = (await client.get(url)).json()
    assert (without["status"], without["signals_applied"]) == ("given", [])
    # A selection made with the signal on is the person's own: it stands (the test above).
    chosen = await client.post(
        f"{ITSAILOR}/consent-events",
        json=event("save-selection", subject_id=subject, categories={"analytics": True}),
        headers={"Sec-GPC": "1", "DNT": "1"},
    )
    assert chosen.status_code == 201, chosen.text
    state = (await client.get(url + query, headers=headers)).json()
    assert (state["status"], state["signals_applied"]) == ("partially-given", [])


@pytest.mark.parametrize(
    ("headers", "query", "applied"),
    [({"Sec-GPC": "1"}, "", ["gpc"]), ({"DNT": "1"}, "", ["dnt"]), ({}, "?gpc=true", ["gpc"])],
)
async def test_a_signal_recorded_as_a_decision_is_a_refusal_before_any_decision(
    client: httpx.AsyncClient, headers: dict[str, str], query: str, applied: list[str]
) -> None:
    """A first visit with GPC (or DNT) to itsailor: the banner does not ask, so a site's back end
    asking the state with the visitor's headers is told the refusal, not to show the banner."""
    url = f"{ITSAILOR}/consents/{uuid.uuid4()}"
    state = (await client.get(url + query, headers=headers)).json()
    assert (state["status"], state["signals_applied"], state["needs_reprompt"]) == (
        "refused",
        applied,
        False,
    )
    assert (state["reprompt_reasons"], state["event_type"], state["choices"]) == ([], None, None)
    assert state["effective"] == {
        "necessary": True, "functional": False, "analytics": False, "marketing": False
    }  # fmt: skip
    without = (await client.get(url)).json()
    assert (without["status"], without["signals_applied"], without["needs_reprompt"]) == (
        "none",
        [],
        True,
    )
    # ailabrix applies GPC and does not record it: no decision is still none, asked again.
    ailabrix = (await client.get(f"{AILABRIX}/consents/{uuid.uuid4()}", headers=headers)).json()
    assert (ailabrix["status"], ailabrix["needs_reprompt"]) == ("none", True)


async def test_a_signal_a_policy_applies_is_applied_in_the_state_as_before(
    client: httpx.AsyncClient,
) -> None:
    """ailabrix applies GPC while present and ignores DNT: a policy that does not record a signal
    as a decision answers as before."""
    subject = uuid.uuid4()
    await client.post(f"{AILABRIX}/consent-events", json=event("accept-all", subject_id=subject))
    url = f"{AILABRIX}/consents/{subject}"
    state = (await client.get(url, headers={"Sec-GPC": "1"})).json()
    assert (state["status"], state["signals_applied"]) == ("refused", ["gpc"])
    assert (await client.get(url, headers={"DNT": "1"})).json()["status"] == "given"


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


async def test_a_signal_refusal_asked_again_is_answered_by_the_signal_not_the_banner(
    client: httpx.AsyncClient, db_url: str, app: ConsentAPI
) -> None:
    """itsailor persists GPC "as you would have made it" without interrupting: after a material
    change, a visitor whose latest decision was the signal's refusal, with the signal still on,
    is not asked again (the client records the refusal on the new version); without the signal
    the banner asks, as for anyone."""
    from tests.banner.test_state import bump

    subject = uuid.uuid4()
    first = await client.post(
        f"{ITSAILOR}/consent-events",
        json=event("reject-all", subject_id=subject, source="signal"),
        headers={"Sec-GPC": "1"},
    )
    assert first.status_code == 201, first.text
    await bump(db_url, material=True, label="Needed")
    services(app).catalog.forget_current("itsailor")  # published by another process
    url = f"{ITSAILOR}/consents/{subject}"
    state = (await client.get(url, headers={"Sec-GPC": "1"})).json()
    assert (state["status"], state["needs_reprompt"], state["reprompt_reasons"]) == (
        "refused",
        False,
        [],
    )
    assert state["signals_applied"] == ["gpc"]
    without = (await client.get(url)).json()
    assert (without["needs_reprompt"], without["reprompt_reasons"]) == (True, ["schema-changed"])
    # The client's refusal on the new version: the state is that decision's, asked nothing.
    again = await client.post(
        f"{ITSAILOR}/consent-events",
        json=event("reject-all", subject_id=subject, source="signal", schema_version=2),
        headers={"Sec-GPC": "1"},
    )
    assert again.status_code == 201, again.text
    state = (await client.get(url, headers={"Sec-GPC": "1"})).json()
    assert (state["status"], state["schema_version"], state["needs_reprompt"]) == (
        "refused",
        2,
        False,
    )

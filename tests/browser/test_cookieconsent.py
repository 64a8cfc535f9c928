"""The vanilla-cookieconsent integration (examples/web/cookieconsent.html) in a real Chromium,
against the live service. Every scenario checks the page (cookieconsent's own view, whether the
optional script ran) against the records a DSR export holds (docs/banner.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import yaml
from playwright.async_api import Page

from service.core.resources import EXAMPLE_SCHEMAS
from tests.browser import README_PAGE, LiveService, NewPage, browser_log, readme_snippet
from tests.factories import api_key, bearer

ITSAILOR_OPTIONAL = ("functional", "analytics", "marketing")


def page_url(site: str, service: LiveService, prop: str = "itsailor") -> str:
    return f"{site}/cookieconsent.html?api={service.url}&property={prop}#top"


async def open_page(page: Page, url: str, *, banner: bool = True) -> None:
    """A new page view of `url` (a reload when the page is there already)."""
    if page.url == url:
        await page.reload()
    else:
        await page.goto(url)
    await page.wait_for_function("() => window.ConsentCookieConsent && ConsentCookieConsent.client")
    if banner:
        await page.locator("#cc-main .cm").wait_for(state="visible")


async def click(page: Page, modal: str, role: str) -> None:
    await page.locator(f'#cc-main .{modal} [data-role="{role}"]').click()


async def open_preferences(page: Page) -> None:
    """The page's "Cookie preferences" link (cookieconsent's data-cc="show-preferencesModal")."""
    await page.locator('a[data-cc="show-preferencesModal"]').click()
    await page.locator("#cc-main .pm").wait_for(state="visible")


async def toggle(page: Page, category: str) -> None:
    """Switch a category on in the preferences, as a person does: on its toggle's label."""
    toggle = page.locator(f'#cc-main input.section__toggle[value="{category}"]')
    assert not await toggle.is_checked()
    await page.locator(
        f'#cc-main label.section__toggle-wrapper:has(input[value="{category}"])'
    ).click()
    assert await toggle.is_checked()


async def save_only(page: Page, category: str, *, from_banner: bool = True) -> None:
    """Save a selection of just `category`: from the banner's "Customize", or from the page's
    preferences link; then wait until it is recorded."""
    if from_banner:
        await click(page, "cm", "show")
    else:
        await open_preferences(page)
    await toggle(page, category)
    await click(page, "pm", "save")
    await settled(page)


async def settled(page: Page) -> None:
    """Every event the page queued has been sent and answered."""
    assert await page.evaluate("() => ConsentCookieConsent.client.flush()") == 0


async def accepted(page: Page, *keys: str) -> dict[str, bool]:
    return {
        key: bool(await page.evaluate("(k) => CookieConsent.acceptedCategory(k)", key))
        for key in keys
    }


async def analytics_ran(page: Page) -> bool:
    return bool(await page.evaluate("() => window.analyticsRan === true"))


async def events_of(service: LiveService, page: Page, prop: str = "itsailor") -> list[Any]:
    subject = await page.evaluate("() => ConsentCookieConsent.client.subjectId")
    events: list[Any] = service.export(prop, subject)["events"]
    return events


def summary(event: dict[str, Any]) -> tuple[str, int, dict[str, bool], list[str]]:
    return (
        event["event_type"],
        event["schema_version"],
        event["effective"],
        event["signals"]["applied"],
    )


def itsailor(**optional: bool) -> dict[str, bool]:
    return {"necessary": True} | {key: optional.get(key, False) for key in ITSAILOR_OPTIONAL}


async def test_accept_all(new_page: NewPage, static_site: str, live_service: LiveService) -> None:
    page = await new_page()
    await open_page(page, page_url(static_site, live_service))
    await click(page, "cm", "all")
    await settled(page)
    [event] = await events_of(live_service, page)
    assert summary(event) == (
        "accept-all",
        1,
        itsailor(functional=True, analytics=True, marketing=True),
        [],
    )
    assert event["choices"] == event["effective"]
    assert event["page_url"] == f"{static_site}/cookieconsent.html"  # no query, no fragment
    assert await accepted(page, *ITSAILOR_OPTIONAL) == dict.fromkeys(ITSAILOR_OPTIONAL, True)
    assert await analytics_ran(page)

    # Another page view: the decision stands (no banner), the script runs again.
    await open_page(page, page_url(static_site, live_service), banner=False)
    assert (
        await page.locator("#cc-main .cm").count() == 0
        or not await page.locator("#cc-main .cm").is_visible()
    )
    assert await analytics_ran(page)
    assert len(await events_of(live_service, page)) == 1
    # The second page view revalidated its copy of the schema (If-None-Match): a 304.
    schema_answers = [
        line["status"]
        for line in map(json.loads, live_service.log().splitlines())
        if line.get("route") == "/v1/properties/{property}/schema"
    ]
    assert schema_answers == [200, 304]
    assert browser_log(page).errors == []


async def test_reject_all(new_page: NewPage, static_site: str, live_service: LiveService) -> None:
    page = await new_page()
    await open_page(page, page_url(static_site, live_service))
    await click(page, "cm", "necessary")
    await settled(page)
    [event] = await events_of(live_service, page)
    assert summary(event) == ("reject-all", 1, itsailor(), [])
    assert event["status"] == "refused"
    assert await accepted(page, *ITSAILOR_OPTIONAL) == dict.fromkeys(ITSAILOR_OPTIONAL, False)
    assert not await analytics_ran(page)
    assert browser_log(page).errors == []


async def test_a_custom_selection_is_recorded_as_the_save_it_was(
    new_page: NewPage, static_site: str, live_service: LiveService
) -> None:
    page = await new_page()
    await open_page(page, page_url(static_site, live_service))
    await save_only(page, "analytics")
    [event] = await events_of(live_service, page)
    assert summary(event) == ("save-selection", 1, itsailor(analytics=True), [])
    assert event["status"] == "partially-given"
    assert await accepted(page, *ITSAILOR_OPTIONAL) == {
        "functional": False,
        "analytics": True,
        "marketing": False,
    }
    assert await analytics_ran(page)

    # ailabrix has one optional category: "Save" with it on is still a save, not an accept-all.
    page = await new_page()
    await open_page(page, page_url(static_site, live_service, "ailabrix"))
    await save_only(page, "analytics")
    [event] = await events_of(live_service, page, "ailabrix")
    assert summary(event) == ("save-selection", 1, {"necessary": True, "analytics": True}, [])
    assert event["status"] == "given"  # every optional category on: the state is the same
    assert browser_log(page).errors == []


async def test_withdraw_from_the_preferences(
    new_page: NewPage, static_site: str, live_service: LiveService
) -> None:
    page = await new_page()
    await open_page(page, page_url(static_site, live_service))
    await click(page, "cm", "all")
    await settled(page)
    await open_page(page, page_url(static_site, live_service), banner=False)
    await open_preferences(page)
    await click(page, "pm", "necessary")
    await settled(page)
    events = await events_of(live_service, page)
    assert [summary(e) for e in events] == [
        ("accept-all", 1, itsailor(functional=True, analytics=True, marketing=True), []),
        ("withdraw", 1, itsailor(), []),
    ]
    assert events[1]["status"] == "withdrawn"
    assert await accepted(page, *ITSAILOR_OPTIONAL) == dict.fromkeys(ITSAILOR_OPTIONAL, False)
    server = await page.evaluate("() => ConsentCookieConsent.client.serverState()")
    assert (server["status"], server["effective"]) == ("withdrawn", itsailor())
    assert browser_log(page).errors == []


async def test_with_gpc_on_the_page_and_the_record_agree(
    new_page: NewPage, static_site: str, live_service: LiveService
) -> None:
    """ailabrix: GPC forces analytics off "regardless of any previous click"."""
    page = await new_page(gpc=True)
    await open_page(page, page_url(static_site, live_service, "ailabrix"))
    assert await events_of(live_service, page, "ailabrix") == []  # nothing until a click
    await click(page, "cm", "all")  # the click is recorded as made ...
    await settled(page)
    [event] = await events_of(live_service, page, "ailabrix")
    assert summary(event) == ("accept-all", 1, {"necessary": True, "analytics": False}, ["gpc"])
    assert event["choices"] == {"necessary": True, "analytics": True}
    # ... and the page applies what the record says applies: nothing optional ran, even briefly.
    assert await accepted(page, "analytics") == {"analytics": event["effective"]["analytics"]}
    assert not await analytics_ran(page)

    # The preferences say why, show the decision (analytics on), and a selection saved there
    # stays off too.
    await open_preferences(page)
    assert "Global Privacy Control" in await page.locator("#cc-main .pm").inner_text()
    assert await page.locator('#cc-main input.section__toggle[value="analytics"]').is_checked()
    await click(page, "pm", "save")
    await settled(page)
    events = await events_of(live_service, page, "ailabrix")
    assert summary(events[-1]) == (
        "save-selection",
        1,
        {"necessary": True, "analytics": False},
        ["gpc"],
    )
    assert await accepted(page, "analytics") == {"analytics": False}
    assert not await analytics_ran(page)
    assert browser_log(page).errors == []


async def test_gpc_switched_on_after_an_accept_all_turns_the_optional_categories_off(
    new_page: NewPage, static_site: str, live_service: LiveService
) -> None:
    url = page_url(static_site, live_service, "ailabrix")
    page = await new_page()
    await open_page(page, url)
    await click(page, "cm", "all")
    await settled(page)
    assert await accepted(page, "analytics") == {"analytics": True}

    # The same visitor (same storage), now with GPC on.
    with_gpc = await new_page(gpc=True, context=page.context)
    await open_page(with_gpc, url, banner=False)
    assert await accepted(with_gpc, "analytics") == {"analytics": False}
    assert not await analytics_ran(with_gpc)
    server = await with_gpc.evaluate("() => ConsentCookieConsent.client.serverState()")
    assert (server["effective"]["analytics"], server["signals_applied"]) == (False, ["gpc"])
    assert server["choices"] == {"necessary": True, "analytics": True}  # kept as it was made

    # The signal stops: the stored decision applies again.
    without = await new_page(context=page.context)
    await open_page(without, url, banner=False)
    assert await accepted(without, "analytics") == {"analytics": True}
    assert await analytics_ran(without)
    # Nothing of this was a decision: the ledger holds the one click.
    assert [e["event_type"] for e in await events_of(live_service, page, "ailabrix")] == [
        "accept-all"
    ]
    for p in (page, with_gpc, without):
        assert browser_log(p).errors == []


async def test_a_save_under_gpc_that_changes_no_toggle_withdraws_nothing(
    new_page: NewPage, static_site: str, live_service: LiveService
) -> None:
    """ailabrix: while GPC applies, the preferences show the person's decision (the signal note
    says why the categories are off), so pressing "Save" without touching a toggle records that
    decision again, never a withdrawal the person did not make (docs/banner.md, "Signals")."""
    url = page_url(static_site, live_service, "ailabrix")
    page = await new_page()
    await open_page(page, url)
    await click(page, "cm", "all")
    await settled(page)

    with_gpc = await new_page(gpc=True, context=page.context)
    await open_page(with_gpc, url, banner=False)
    for _ in range(2):  # cookieconsent resets the toggles when the panel closes
        await open_preferences(with_gpc)
        assert "Global Privacy Control" in await with_gpc.locator("#cc-main .pm").inner_text()
        toggle = with_gpc.locator('#cc-main input.section__toggle[value="analytics"]')
        assert await toggle.is_checked()  # the decision, not what applies
        await click(with_gpc, "pm", "save")
        await settled(with_gpc)
        assert await accepted(with_gpc, "analytics") == {"analytics": False}
        assert not await analytics_ran(with_gpc)
    events = await events_of(live_service, page, "ailabrix")
    assert [(e["event_type"], e["choices"]["analytics"]) for e in events] == [
        ("accept-all", True),
        ("save-selection", True),
        ("save-selection", True),
    ]
    assert summary(events[-1])[2:] == ({"necessary": True, "analytics": False}, ["gpc"])

    # The signal stops: the person's decision applies again.
    without = await new_page(context=page.context)
    await open_page(without, url, banner=False)
    state = await without.evaluate("() => ConsentCookieConsent.client.state()")
    assert (state["status"], state["effective"]["analytics"]) == ("given", True)
    assert await analytics_ran(without)
    for p in (page, with_gpc, without):
        assert browser_log(p).errors == []


def publish_a_new_cookie(live_service: LiveService, tmp_path: Path) -> None:
    """itsailor's version 2, material: a new cookie in analytics."""
    document = yaml.safe_load((EXAMPLE_SCHEMAS / "itsailor.yaml").read_text())
    document["categories"][2]["cookies"].append(
        {
            "name": "plausible_ignore",
            "provider": "itsailor.io",
            "purpose": "Self-hosted measurement goes live.",
            "duration": "12 months",
            "party": "first",
            "storage": "cookie",
        }
    )
    changed = tmp_path / "itsailor.yaml"
    changed.write_text(yaml.safe_dump(document))
    assert live_service.publish(changed, material=True)["version"] == 2


async def test_a_material_republish_prompts_again_and_records_it(
    new_page: NewPage, static_site: str, live_service: LiveService, tmp_path: Path
) -> None:
    page = await new_page()
    url = page_url(static_site, live_service)
    await open_page(page, url)
    await click(page, "cm", "all")
    await settled(page)

    publish_a_new_cookie(live_service, tmp_path)

    await open_page(page, url)  # shown again: a new revision
    assert "changed since you last chose" in await page.locator("#cc-main .cm").inner_text()
    await click(page, "cm", "all")
    await settled(page)
    events = await events_of(live_service, page)
    every = itsailor(functional=True, analytics=True, marketing=True)
    assert [summary(e) for e in events] == [
        ("accept-all", 1, every, []),
        ("re-prompt", 2, {}, []),
        ("accept-all", 2, every, []),
    ]
    await open_page(page, url, banner=False)  # decided on version 2: asked no more
    assert len(await events_of(live_service, page)) == 3
    assert browser_log(page).errors == []


BEACON_SPY = """
const send = navigator.sendBeacon.bind(navigator);
navigator.sendBeacon = (url, data) => {
  const queued = send(url, data);
  const seen = JSON.parse(sessionStorage.getItem('beacons') || '[]');
  seen.push({url: String(url), type: data && data.type, queued: queued});
  sessionStorage.setItem('beacons', JSON.stringify(seen));
  return queued;
};
"""


async def test_an_unsent_event_leaves_as_a_json_beacon_when_the_page_is_hidden(
    new_page: NewPage, static_site: str, live_service: LiveService
) -> None:
    page = await new_page()
    await page.add_init_script(BEACON_SPY)
    await open_page(page, page_url(static_site, live_service))
    events_url = f"{live_service.url}/v1/properties/itsailor/consent-events"
    await page.route(events_url, lambda route: route.fulfill(status=503, body="down"))
    await click(page, "cm", "necessary")
    await page.wait_for_function(
        "() => JSON.parse(localStorage.getItem('consent-record:itsailor:outbox') || '[]').length === 1"
    )
    assert await page.evaluate("() => ConsentCookieConsent.client.flush()") == 1  # kept
    subject = await page.evaluate("() => ConsentCookieConsent.client.subjectId")
    await page.unroute(events_url)

    await page.goto(f"{static_site}/__blank.html")  # pagehide: the outbox leaves as beacons
    # What the page handed to sendBeacon (the spy keeps it in this origin's sessionStorage).
    [beacon] = await page.evaluate("() => JSON.parse(sessionStorage.getItem('beacons'))")
    assert beacon == {"url": events_url, "type": "application/json", "queued": True}
    for _ in range(50):  # a beacon is answered after the page is gone
        if live_service.export("itsailor", subject)["events"]:
            break
        await page.wait_for_timeout(100)
    [event] = live_service.export("itsailor", subject)["events"]
    assert summary(event) == ("reject-all", 1, itsailor(), [])

    # The next page view sends it once more with the same id: answered 200, stored once.
    await open_page(page, page_url(static_site, live_service), banner=False)
    await settled(page)
    assert (
        await page.evaluate("() => localStorage.getItem('consent-record:itsailor:outbox')") == "[]"
    )
    assert [e["event_id"] for e in live_service.export("itsailor", subject)["events"]] == [
        event["event_id"]
    ]


async def test_an_event_refused_with_503_is_sent_again_with_the_same_id_on_the_next_page_view(
    new_page: NewPage, static_site: str, live_service: LiveService
) -> None:
    page = await new_page()
    url = page_url(static_site, live_service)
    await open_page(page, url)
    events_url = f"{live_service.url}/v1/properties/itsailor/consent-events"
    await page.route(events_url, lambda route: route.fulfill(status=503, body="down"))
    await click(page, "cm", "all")
    queued = await page.evaluate(
        "() => ConsentCookieConsent.client.flush().then(() => "
        "JSON.parse(localStorage.getItem('consent-record:itsailor:outbox')))"
    )
    assert len(queued) == 1
    await page.context.set_offline(True)  # no beacon gets through either
    await page.goto("about:blank")
    await page.context.set_offline(False)
    await page.unroute(events_url)
    await open_page(page, url, banner=False)  # the decision applies meanwhile
    assert await accepted(page, "analytics") == {"analytics": True}
    await settled(page)
    [event] = await events_of(live_service, page)
    assert event["event_id"] == queued[0]["body"]["event_id"]
    assert event["event_type"] == "accept-all"


async def test_google_consent_mode_follows_the_effective_choices(
    new_page: NewPage, static_site: str, live_service: LiveService, tmp_path: Path
) -> None:
    document = yaml.safe_load((EXAMPLE_SCHEMAS / "ailabrix.yaml").read_text())
    document["google_consent_mode"] = {
        "analytics_storage": "analytics",
        "security_storage": "necessary",
    }
    mapped = tmp_path / "ailabrix.yaml"
    mapped.write_text(yaml.safe_dump(document))
    live_service.publish(mapped, material=True)
    gtag = "window.dataLayer = []; window.gtag = function () { dataLayer.push(Array.from(arguments)); };"

    calls = []
    for gpc in (False, True):
        page = await new_page(gpc=gpc)
        await page.add_init_script(gtag)
        await open_page(page, page_url(static_site, live_service, "ailabrix"))
        await click(page, "cm", "all")
        await settled(page)
        calls.append(await page.evaluate("() => dataLayer.filter(c => c[0] === 'consent')"))
        assert browser_log(page).errors == []
    denied = dict.fromkeys(
        ["ad_storage", "ad_user_data", "ad_personalization", "analytics_storage",
         "functionality_storage", "personalization_storage", "security_storage"],
        "denied",
    )  # fmt: skip
    for consent in calls:
        assert consent[0] == ["consent", "default", denied | {"wait_for_update": 500}]
    assert calls[0][-1] == [
        "consent",
        "update",
        denied | {"analytics_storage": "granted", "security_storage": "granted"},
    ]
    assert calls[1][-1] == ["consent", "update", denied | {"security_storage": "granted"}]  # GPC


async def test_while_a_material_change_asks_again_no_optional_category_applies(
    new_page: NewPage, static_site: str, live_service: LiveService, tmp_path: Path
) -> None:
    """The banner asks again and cookieconsent runs no optional script: the client's effective
    choices, Google Consent Mode and the service's state say the same until the person answers
    (docs/banner.md, "Asking again"); the decision and its status are kept."""
    document = yaml.safe_load((EXAMPLE_SCHEMAS / "ailabrix.yaml").read_text())
    document["google_consent_mode"] = {"analytics_storage": "analytics"}
    mapped = tmp_path / "ailabrix.yaml"
    mapped.write_text(yaml.safe_dump(document))
    assert live_service.publish(mapped, material=True)["version"] == 2
    page = await new_page()
    await page.add_init_script(GTAG_STUB)
    url = page_url(static_site, live_service, "ailabrix")
    await open_page(page, url)
    await click(page, "cm", "all")
    await settled(page)
    assert await consent_updates(page) == [{"analytics_storage": "denied"}, GRANTED]

    document["categories"].append(
        {
            "key": "video",
            "label": "Video",
            "description": "Video embeds.",
            "required": False,
            "cookies": [],
        }
    )
    mapped.write_text(yaml.safe_dump(document))
    assert live_service.publish(mapped, material=True)["version"] == 3

    await open_page(page, url)  # asked again
    state = await page.evaluate("() => ConsentCookieConsent.client.state()")
    assert state["reprompt_reasons"] == ["schema-changed"]
    assert state["effective"] == {"necessary": True, "analytics": False, "video": False}
    assert (state["status"], state["choices"]) == ("given", {"necessary": True, "analytics": True})
    assert await accepted(page, "analytics") == {"analytics": False}
    assert not await analytics_ran(page)
    assert await consent_updates(page) == [{"analytics_storage": "denied"}]  # never granted
    server = await page.evaluate("() => ConsentCookieConsent.client.serverState()")
    assert (server["status"], server["effective"]) == (state["status"], state["effective"])

    await click(page, "cm", "all")  # the person answers: it applies again
    await settled(page)
    assert (await consent_updates(page))[-1] == GRANTED
    assert await analytics_ran(page)
    assert browser_log(page).errors == []


GTAG_STUB = (
    "window.dataLayer = []; window.gtag = function () { dataLayer.push(Array.from(arguments)); };"
)
GRANTED = {"analytics_storage": "granted"}


async def consent_updates(page: Page) -> list[dict[str, str]]:
    """Each gtag('consent', 'update', …) of this page view, its analytics_storage only."""
    updates: list[dict[str, str]] = await page.evaluate(
        """() => dataLayer.filter(c => c[0] === 'consent' && c[1] === 'update')
            .map(c => ({analytics_storage: c[2].analytics_storage}))"""
    )
    return updates


async def test_a_site_not_listed_reads_nothing_and_stores_nothing(
    new_page: NewPage, other_site: str, live_service: LiveService
) -> None:
    page = await new_page()
    await page.goto(page_url(other_site, live_service))
    await page.wait_for_function(
        "() => /Failed to fetch|TypeError/.test(document.getElementById('effective').textContent)"
    )
    assert await page.locator("#cc-main .cm").count() == 0  # no schema read: no banner
    # A beacon needs no readable answer; the service refuses it by its Origin all the same.
    sent = await page.evaluate(
        """(url) => navigator.sendBeacon(url, JSON.stringify({
            subject_id: crypto.randomUUID(), event_type: 'accept-all', schema_version: 1}))""",
        f"{live_service.url}/v1/properties/itsailor/consent-events",
    )
    assert sent is True  # the browser sent it ...
    await page.wait_for_timeout(500)
    connection = await asyncpg.connect(live_service.owner_url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM consent_events") == 0  # ... in vain
    finally:
        await connection.close()
    assert '"status":403' in live_service.log().replace(" ", "")


async def test_the_readme_snippet_is_the_whole_glue(
    new_page: NewPage, static_site: str, live_service: LiveService
) -> None:
    lines = readme_snippet().strip().splitlines()
    assert len(lines) <= 15, lines
    page = await new_page()
    await page.goto(f"{static_site}{README_PAGE}?api={live_service.url}")
    await page.wait_for_function("() => window.ConsentCookieConsent && ConsentCookieConsent.client")
    await page.locator("#cc-main .cm").wait_for(state="visible")
    await save_only(page, "analytics")
    [event] = await events_of(live_service, page)
    assert summary(event) == ("save-selection", 1, itsailor(analytics=True), [])
    assert await accepted(page, *ITSAILOR_OPTIONAL) == {
        "functional": False,
        "analytics": True,
        "marketing": False,
    }
    assert await analytics_ran(page)
    await open_preferences(page)
    assert browser_log(page).errors == []


async def test_itsailor_records_gpc_as_the_visitors_refusal_without_asking(
    new_page: NewPage, static_site: str, live_service: LiveService
) -> None:
    """itsailor: "If your browser sends Sec-GPC: 1, we treat that as a Reject-all signal for
    non-essential categories and persist the choice as you would have made it through the
    banner." """
    page = await new_page(gpc=True)
    url = page_url(static_site, live_service)
    await open_page(page, url, banner=False)
    await settled(page)
    assert not await page.locator("#cc-main .cm").is_visible()  # the visitor is not interrupted
    [event] = await events_of(live_service, page)
    assert summary(event) == ("reject-all", 1, itsailor(), ["gpc"])
    assert event["source"] == "signal"  # the signal, not a click
    assert await accepted(page, *ITSAILOR_OPTIONAL) == dict.fromkeys(ITSAILOR_OPTIONAL, False)
    assert not await analytics_ran(page)

    await open_page(page, url, banner=False)  # recorded once, not on every page view
    await settled(page)
    assert len(await events_of(live_service, page)) == 1

    # The person can still opt in; an explicit choice through the banner stands.
    await save_only(page, "analytics", from_banner=False)
    events = await events_of(live_service, page)
    assert summary(events[-1]) == ("save-selection", 1, itsailor(analytics=True), [])
    assert events[-1]["source"] == "banner"
    assert await accepted(page, "analytics") == {"analytics": True}
    assert browser_log(page).errors == []


async def test_itsailor_answers_a_material_change_with_the_signal_without_asking(
    new_page: NewPage, static_site: str, live_service: LiveService, tmp_path: Path
) -> None:
    """The signal's refusal on record, then a material change: with GPC still on, the visitor is
    not interrupted (client 1.0.3; 1.0.2 showed the banner), and the refusal is recorded again
    from the signal on the new version."""
    page = await new_page(gpc=True)
    url = page_url(static_site, live_service)
    await open_page(page, url, banner=False)
    await settled(page)
    publish_a_new_cookie(live_service, tmp_path)

    await open_page(page, url, banner=False)
    await settled(page)
    assert not await page.locator("#cc-main .cm").is_visible()
    events = await events_of(live_service, page)
    assert [(summary(e), e["source"]) for e in events] == [
        (("reject-all", 1, itsailor(), ["gpc"]), "signal"),
        (("reject-all", 2, itsailor(), ["gpc"]), "signal"),
    ]
    assert await accepted(page, *ITSAILOR_OPTIONAL) == dict.fromkeys(ITSAILOR_OPTIONAL, False)
    assert browser_log(page).errors == []


async def test_a_withdrawal_in_writing_reaches_the_page_on_its_next_view(
    new_page: NewPage, static_site: str, live_service: LiveService
) -> None:
    page = await new_page()
    url = page_url(static_site, live_service)
    await open_page(page, url)
    await click(page, "cm", "all")
    await settled(page)
    subject = await page.evaluate("() => ConsentCookieConsent.client.subjectId")

    key = await api_key(live_service.db_url, "dsr:withdraw")
    async with httpx.AsyncClient(base_url=live_service.url) as http:
        answer = await http.post(
            "/v1/dsr/withdrawals",
            json={"subject_id": subject, "reference": "LETTER-7"},
            headers=bearer(key),
        )
    assert answer.status_code == 201, answer.text

    await open_page(page, url, banner=False)
    assert await accepted(page, *ITSAILOR_OPTIONAL) == dict.fromkeys(ITSAILOR_OPTIONAL, False)
    assert not await analytics_ran(page)
    assert not await page.locator("#cc-main .cm").is_visible()  # decided: nothing to ask
    state = await page.evaluate("() => ConsentCookieConsent.client.state()")
    assert (state["status"], state["choices"]["analytics"]) == ("withdrawn", False)
    events = await events_of(live_service, page)
    assert [(e["event_type"], e["source"]) for e in events] == [
        ("accept-all", "banner"),
        ("withdraw", "dsr"),
    ]
    assert browser_log(page).errors == []

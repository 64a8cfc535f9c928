"""Schema text in the banner is text: every place vanilla-cookieconsent shows a category's label,
description or cookie table cell reads exactly what the schema says, and markup in it stays
inert. cookieconsent inserts section titles, descriptions and cells as HTML, so the integration
escapes them; it also sets each toggle's label (the checkbox's accessible name) with textContent
from the escaped title, which the integration puts back to the plain label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from playwright.async_api import Dialog, Page

from service.banner.client import CLIENT_VERSION
from service.core.resources import EXAMPLE_SCHEMAS
from tests.browser import BLANK_PAGE, LiveService, NewPage, browser_log
from tests.browser.test_cookieconsent import open_page, open_preferences, page_url

# By category key: the labels of the republished itsailor schema. A raw `<b>…</b>` would be cut
# by cookieconsent's tag-stripping of the toggle label, an escaped one shown as `&lt;b&gt;`.
LABELS = {
    "necessary": 'Strictly necessary & "essential"',
    "functional": "<b>Preferences</b>",
    "analytics": "Ads & measurement <img src=x onerror=\"window.injected=1;alert(1)\"> 'quoted'",
    "marketing": "Tom &amp; Jerry's <script>window.injected=2</script>",
}
DESCRIPTION = '1 < 2 & 3 > 2 <svg onload="window.injected=3;alert(3)"></svg> &lt;kept&gt;'
PROVIDER = 'A & B "Ltd" <i>x</i>'
PURPOSE = "<img src=y onerror=\"window.injected=4;alert(4)\"> & more 'text'"

# What cookieconsent shows, read from the page: per toggle (by category key), the section's
# title, the toggle's label, the description, and the table's provider and purpose cells.
SHOWN = """() => Object.fromEntries(
    Array.from(document.querySelectorAll('#cc-main .pm input.section__toggle')).map((input) => {
        const section = input.closest('.pm__section--toggle');
        const cells = (column) => Array.from(
            section.querySelectorAll(`td[data-column="${column}"]`), (td) => td.textContent);
        return [input.value, {
            title: section.querySelector('.pm__section-title').textContent,
            title_seen: section.querySelector('.pm__section-title').innerText,
            toggle: input.closest('label').querySelector('.toggle__label').textContent,
            description: section.querySelector('.pm__section-desc').textContent,
            providers: cells('Provider'),
            purposes: cells('Purpose'),
        }];
    }))"""
# Elements only markup from the schema could have made.
INJECTED = (
    "#cc-main img, #cc-main b, #cc-main i, #cc-main script, #cc-main [onerror], #cc-main [onload]"
)


def republish_with_markup(service: LiveService, folder: Path) -> None:
    """itsailor version 2: every label, description, provider and purpose carries markup."""
    document = yaml.safe_load((EXAMPLE_SCHEMAS / "itsailor.yaml").read_text())
    for category in document["categories"]:
        category["label"] = LABELS[category["key"]]
        category["description"] = DESCRIPTION
        for cookie in category["cookies"]:
            cookie["provider"], cookie["purpose"] = PROVIDER, PURPOSE
    path = folder / "itsailor.yaml"
    path.write_text(yaml.safe_dump(document))
    assert service.publish(path, material=True)["version"] == 2


def record_dialogs(page: Page) -> list[str]:
    dialogs: list[str] = []

    async def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    return dialogs


async def assert_shown_as_text(page: Page) -> None:
    shown: dict[str, dict[str, Any]] = await page.evaluate(SHOWN)
    assert set(shown) == set(LABELS)
    for key, label in LABELS.items():
        assert shown[key]["title"] == shown[key]["title_seen"] == label, key
        assert shown[key]["toggle"] == label, key
        assert shown[key]["description"] == DESCRIPTION, key
        assert set(shown[key]["providers"]) <= {PROVIDER}, key
        assert set(shown[key]["purposes"]) <= {PURPOSE}, key
        # What a screen reader announces for the toggle: its label.
        assert await page.get_by_role("checkbox", name=label, exact=True).count() == 1, key
    assert any(shown[key]["purposes"] for key in shown)  # the tables were there to read


async def assert_nothing_ran(page: Page, dialogs: list[str]) -> None:
    await page.wait_for_timeout(300)  # an <img src=x> fails within a few ms on 127.0.0.1
    assert await page.locator(INJECTED).count() == 0
    assert await page.evaluate("() => window.injected") is None
    assert dialogs == []
    assert browser_log(page).errors == []


async def test_labels_descriptions_and_cells_show_as_the_schema_writes_them(
    new_page: NewPage, static_site: str, live_service: LiveService, tmp_path: Path
) -> None:
    republish_with_markup(live_service, tmp_path)
    page = await new_page()
    dialogs = record_dialogs(page)
    await open_page(page, page_url(static_site, live_service))
    # The consent modal names no category; what it says comes from the integration's texts.
    banner = await page.locator("#cc-main .cm").inner_text()
    assert not any(label in banner for label in LABELS.values())
    await open_preferences(page)
    await assert_shown_as_text(page)

    # cookieconsent rebuilds the panel's body on setLanguage, without onModalReady.
    assert await page.evaluate("() => CookieConsent.setLanguage('en', true)") is True
    await page.wait_for_function(
        "(label) => Array.from(document.querySelectorAll('#cc-main .toggle__label'),"
        " (s) => s.textContent).includes(label)",
        arg=LABELS["analytics"],
    )
    await assert_shown_as_text(page)
    await assert_nothing_ran(page, dialogs)


# A page that passes its own onModalReady (README's snippet plus `cookieconsent: {…}`).
RUN_WITH_CALLBACK = """([api]) => {
    window.ready = [];
    return ConsentCookieConsent.run({api: api, property: 'itsailor', cookieconsent: {
        onModalReady: ({modalName, modal}) => window.ready.push([modalName, Array.from(
            modal.querySelectorAll('.toggle__label'), (s) => s.textContent)]),
    }}).then(() => true);
}"""


async def test_a_pages_own_on_modal_ready_runs_after_the_labels_are_set(
    new_page: NewPage, static_site: str, live_service: LiveService, tmp_path: Path
) -> None:
    republish_with_markup(live_service, tmp_path)
    page = await new_page()
    dialogs = record_dialogs(page)
    await page.goto(static_site + BLANK_PAGE)
    await page.add_style_tag(url=f"{static_site}/vendor/cookieconsent/cookieconsent.css")
    await page.add_script_tag(url=f"{static_site}/vendor/cookieconsent/cookieconsent.umd.js")
    for name in ("consent.js", "consent-cookieconsent.js"):
        await page.add_script_tag(url=f"{live_service.url}/client/{CLIENT_VERSION}/{name}")
    assert await page.evaluate(RUN_WITH_CALLBACK, [live_service.url]) is True
    await page.locator("#cc-main .cm").wait_for(state="visible")
    await page.locator('#cc-main .cm [data-role="show"]').click()
    await page.locator("#cc-main .pm").wait_for(state="visible")

    ready: list[list[Any]] = await page.evaluate("() => window.ready")
    assert ready == [["consentModal", []], ["preferencesModal", list(LABELS.values())]]
    await assert_shown_as_text(page)
    await assert_nothing_ran(page, dialogs)


# A page that passes every callback the integration uses: each must run after the integration's,
# which records the decision, never instead of it.
RUN_WITH_EVERY_CALLBACK = """([api]) => {
    window.heard = [];
    const hear = (name) => (event) => window.heard.push(
        [name, event && event.modalName ? event.modalName : null]);
    return ConsentCookieConsent.run({api: api, property: 'itsailor', cookieconsent: {
        onFirstConsent: hear('onFirstConsent'), onChange: hear('onChange'),
        onModalShow: hear('onModalShow'), onModalReady: hear('onModalReady'),
    }}).then(() => true);
}"""


async def test_a_pages_own_callbacks_never_stop_a_decision_being_recorded(
    new_page: NewPage, static_site: str, live_service: LiveService
) -> None:
    page = await new_page()
    await page.goto(static_site + BLANK_PAGE)
    await page.add_script_tag(url=f"{static_site}/vendor/cookieconsent/cookieconsent.umd.js")
    for name in ("consent.js", "consent-cookieconsent.js"):
        await page.add_script_tag(url=f"{live_service.url}/client/{CLIENT_VERSION}/{name}")
    assert await page.evaluate(RUN_WITH_EVERY_CALLBACK, [live_service.url]) is True
    await page.locator("#cc-main .cm").wait_for(state="visible")
    await page.locator('#cc-main .cm [data-role="all"]').click()
    assert await page.evaluate("() => ConsentCookieConsent.client.flush()") == 0
    await page.evaluate("() => CookieConsent.acceptCategory([])")  # a change: none accepted
    assert await page.evaluate("() => ConsentCookieConsent.client.flush()") == 0

    subject = await page.evaluate("() => ConsentCookieConsent.client.subjectId")
    events = live_service.export("itsailor", subject)["events"]
    # A first decision, then a change to none: a withdrawal (docs/banner.md).
    assert [event["event_type"] for event in events] == ["accept-all", "withdraw"]
    heard = await page.evaluate("() => window.heard")
    for callback in (["onModalShow", "consentModal"], ["onFirstConsent", None], ["onChange", None]):
        assert callback in heard, heard

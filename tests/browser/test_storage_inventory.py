"""What the example page really stores, against what its schema tells visitors: after a decision,
every cookie and storage entry the page holds is listed in the schema (and in the banner's cookie
table, which is built from it), and every entry the schema says keeps the consent choice is one
the page wrote (docs/banner.md, "What the browser keeps")."""

from __future__ import annotations

from typing import Any

import pytest

from service.consent_schema.document import load_document_file
from service.core.resources import EXAMPLE_SCHEMAS
from tests.browser import LiveService, NewPage, browser_log
from tests.browser.test_cookieconsent import click, open_page, open_preferences, page_url, settled

STORED = """async () => ({
    cookies: document.cookie,
    local: Object.keys(localStorage).sort(),
    session: Object.keys(sessionStorage).sort(),
    databases: (await indexedDB.databases()).map((d) => d.name),
})"""


@pytest.mark.parametrize("property_name", ["ailabrix", "itsailor"])
async def test_the_page_stores_what_its_schema_lists(
    new_page: NewPage, static_site: str, live_service: LiveService, property_name: str
) -> None:
    document = load_document_file(EXAMPLE_SCHEMAS / f"{property_name}.yaml")
    entries = [entry for category in document.categories for entry in category.cookies]
    listed = {(entry.storage.value, entry.name) for entry in entries}
    about_consent = {entry.name for entry in entries if "consent" in entry.purpose.lower()}

    page = await new_page()
    await open_page(page, page_url(static_site, live_service, property_name))
    await click(page, "cm", "all")
    await settled(page)
    stored: dict[str, Any] = await page.evaluate(STORED)

    assert stored["cookies"] == "", "the client and cookieconsent set no cookie"
    assert (stored["session"], stored["databases"]) == ([], [])
    written = set(stored["local"])
    assert {("localStorage", key) for key in written} <= listed, (
        f"stored but not listed: {sorted(written - {name for _, name in listed})}"
    )
    assert about_consent <= written, f"listed but never stored: {sorted(about_consent - written)}"

    # The visitor reads the same names in the banner's cookie tables (in each category's
    # section, which the visitor expands).
    await open_preferences(page)
    names = await page.locator("#cc-main .pm table td[data-column='Name']").all_text_contents()
    assert written <= {name.strip() for name in names}, names
    assert browser_log(page).errors == []

"""The browser plumbing end to end: a page on the allowed origin reads the live service's schema
across origins; the same request from an origin the service does not list gets nothing readable.
"""

from __future__ import annotations

from typing import Any

from playwright.async_api import Page

from tests.browser import BLANK_PAGE, LiveService, NewPage, browser_log

READ_SCHEMA = """async (api) => {
    try {
        const answer = await fetch(api + '/v1/properties/ailabrix/schema');
        return {status: answer.status, body: await answer.json()};
    } catch (error) {
        return {error: error.name + ': ' + error.message};
    }
}"""


async def open_blank(page: Page, site: str) -> None:
    """An empty document on the site's origin: the example page (with its banner) stays out."""
    response = await page.goto(site + BLANK_PAGE)
    assert response is not None
    assert response.status == 200
    assert await page.evaluate("location.origin") == site


async def test_cross_origin_schema_read_from_the_allowed_site_only(
    new_page: NewPage, static_site: str, other_site: str, live_service: LiveService
) -> None:
    page = await new_page()
    await open_blank(page, static_site)
    # The static server serves examples/web/ (its listing, or the example's index page).
    assert await page.evaluate("fetch('/').then(answer => answer.status)") == 200

    allowed: dict[str, Any] = await page.evaluate(READ_SCHEMA, live_service.url)
    assert allowed.get("status") == 200, (allowed, browser_log(page).console)
    assert allowed["body"]["property"] == "ailabrix"
    assert allowed["body"]["version"] == 1

    stranger = await new_page()
    await open_blank(stranger, other_site)
    refused: dict[str, Any] = await stranger.evaluate(READ_SCHEMA, live_service.url)
    assert refused == {"error": "TypeError: Failed to fetch"}
    assert any(
        "blocked by CORS policy" in line and "Access-Control-Allow-Origin" in line
        for line in browser_log(stranger).console_errors
    ), browser_log(stranger).console_errors

    assert browser_log(page).errors == []
    assert browser_log(page).console_errors == []
    assert browser_log(stranger).errors == []


CREATE_WITH = """(userId) => {
    try {
        ConsentRecord.create({api: 'https://consent.invalid', property: 'itsailor', userId});
        return 'created';
    } catch (error) {
        return error.name + ': ' + error.message;
    }
}"""


async def test_the_client_refuses_an_account_id_the_service_would_refuse(
    new_page: NewPage, static_site: str, live_service: LiveService
) -> None:
    """`create` throws at once for an account id the service answers `422` (one spelling,
    service/core/json_input.py), rather than every event carrying it being refused and dropped;
    the service's own rule, `tests/banner/test_events.py::test_an_account_id_has_one_spelling`."""
    page = await new_page()
    await open_blank(page, static_site)
    await page.add_script_tag(url=live_service.url + "/client/1.0.3/consent.js")
    for good in ("alice", "customer 42", "ünïcode-ok"):
        assert await page.evaluate(CREATE_WITH, good) == "created"
    for bad in ("   ", "alice ", "\talice", "\u202ealice", "a\nb", "a\u200bb"):
        refused = await page.evaluate(CREATE_WITH, bad)
        assert refused.startswith("TypeError: ConsentRecord.create: userId must not"), (
            bad,
            refused,
        )


RUN_WITH = """(userId) => {
    try {
        return ConsentCookieConsent.run({api: 'https://consent.invalid', property: 'itsailor', userId})
            .then(() => 'resolved', (error) => 'rejected: ' + error.message);
    } catch (error) {
        return 'thrown: ' + error.message;
    }
}"""


async def test_the_integration_rejects_that_account_id_rather_than_throwing(
    new_page: NewPage, static_site: str, live_service: LiveService
) -> None:
    """`run()` returns a promise and rejects what goes wrong: a bad userId thrown instead would
    escape a page's `.catch` (the README's glue), and the banner would never show."""
    page = await new_page()
    await open_blank(page, static_site)
    await page.add_script_tag(url=static_site + "/vendor/cookieconsent/cookieconsent.umd.js")
    for name in ("consent.js", "consent-cookieconsent.js"):
        await page.add_script_tag(url=f"{live_service.url}/client/1.0.3/{name}")
    outcome = await page.evaluate(RUN_WITH, "alice ")
    assert outcome.startswith("rejected: ConsentRecord.create: userId must not"), outcome

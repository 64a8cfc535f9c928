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

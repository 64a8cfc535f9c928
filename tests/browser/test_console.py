"""The privacy team's web console (/console/, docs/console.md) in a real Chromium against the live
service: a person found, exported and erased; the audit log; a property's versions, their diff and
its statistics drawn as charts, each mark's numbers checked against counts made here from the
events sent. Screenshots of the key steps go to artifacts/screenshots/."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import yaml
from playwright.async_api import Download, Locator, Page, Route, ViewportSize
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from service.auth.service import revoke_key
from service.console.routes import CSP
from service.core.db import create_engine, create_sessionmaker
from service.core.resources import EXAMPLE_SCHEMAS
from tests.browser import LiveService, NewPage, browser_log
from tests.factories import api_key

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
KEY_STORE = "consent-console:key"
LAPTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) ConsoleTest/1.0"
REFERENCE = "DSR-2026-0042"
DECISIONS = ("accept-all", "save-selection", "reject-all", "withdraw")

# Reports every Content-Security-Policy violation of every page load to the test (an init script
# is not subject to the page's CSP).
CSP_WATCH = """document.addEventListener('securitypolicyviolation', (event) => {
    window.reportCspViolation(event.violatedDirective + ' ' + event.blockedURI);
});"""


async def watch_csp(page: Page) -> list[str]:
    violations: list[str] = []

    def report(violation: str) -> None:
        violations.append(violation)

    await page.expose_function("reportCspViolation", report)
    await page.add_init_script(CSP_WATCH)
    return violations


# --- the events, and what the statistics must say about them -------------------------------------


@dataclass
class Sent:
    """One event as stored: the day, version, type, effective choices and GPC the counts use."""

    day: str
    version: int
    event_type: str
    effective: dict[str, bool]
    gpc: bool = False
    event_id: str = ""


@dataclass
class Expected:
    """The statistics, counted here by hand from the events sent."""

    optin: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    decisions: dict[tuple[str, str], int] = field(default_factory=dict)
    versions: dict[int, int] = field(default_factory=dict)
    events: int = 0
    gpc: int = 0


def tally(events: list[Sent]) -> Expected:
    optin: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    decisions: dict[tuple[str, str], int] = defaultdict(int)
    versions: dict[int, int] = defaultdict(int)
    for event in events:
        if event.event_type not in DECISIONS:
            continue
        decisions[(event.event_type, event.day)] += 1
        versions[event.version] += 1
        for category, on in event.effective.items():
            if category != "necessary":
                optin[(category, event.day)][0 if on else 1] += 1
    return Expected(
        optin={key: (granted, denied) for key, (granted, denied) in optin.items()},
        decisions=dict(decisions),
        versions=dict(versions),
        events=len(events),
        gpc=sum(event.gpc for event in events),
    )


def percent(granted: int, denied: int) -> str:
    return f"{round(granted / (granted + denied) * 1000) / 10:.1f}"


V1 = ("functional", "analytics", "marketing")
V2 = ("analytics", "marketing", "support")


def effective(optional: tuple[str, ...], *on: str) -> dict[str, bool]:
    return {"necessary": True} | {key: key in on for key in optional}


async def seed_earlier_days(owner_url: str, today: date) -> list[Sent]:
    """Other visitors' decisions on the three days before today: the service stamps an event with
    the time it arrives, so earlier days can only be written straight into the table."""
    plan = [
        (3, "accept-all", V1), (3, "accept-all", V1), (3, "reject-all", ()),
        (2, "save-selection", ("analytics",)), (2, "reject-all", ()),
        (1, "accept-all", V1), (1, "withdraw", ()),
    ]  # fmt: skip
    sent = []
    rows = []
    for days_ago, event_type, on in plan:
        day = today - timedelta(days=days_ago)
        chosen = effective(V1, *on)
        sent.append(Sent(day.isoformat(), 1, event_type, chosen))
        recorded = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12)
        rows.append(
            (
                uuid.uuid4(), "itsailor", uuid.uuid4(), event_type, 1, json.dumps(chosen),
                json.dumps(chosen), False, False, "[]", bytes(32), recorded,
            )
        )  # fmt: skip
    connection = await asyncpg.connect(owner_url)  # the service's role inserts no row by hand
    try:
        await connection.executemany(
            """INSERT INTO consent_events (event_id, property, subject_id, event_type,
                   schema_version, choices, effective, gpc, dnt, signals_applied, request_hash,
                   recorded_at, identity, leaf)
               VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10::jsonb, $11, $12,
                       sha256($3::uuid::text::bytea), sha256($1::uuid::text::bytea))""",
            rows,
        )
    finally:
        await connection.close()
    return sent


def publish_second_version(service: LiveService, folder: Path) -> None:
    """itsailor v2: a category added (support) and one removed (functional), one relabelled
    (marketing), a cookie added, one removed and one changed, and a shorter decision validity."""
    document = yaml.safe_load((EXAMPLE_SCHEMAS / "itsailor.yaml").read_text())
    categories = {category["key"]: category for category in document["categories"]}
    necessary = categories["necessary"]
    necessary["cookies"] = [c for c in necessary["cookies"] if c["name"] != "next-auth.csrf-token"]
    session = next(c for c in necessary["cookies"] if c["name"] == "directus_session_token")
    session["duration"] = "Session"
    categories["analytics"]["cookies"].append(
        {
            "name": "plausible_ignore",
            "provider": "itsailor.io",
            "purpose": "Remembers that this browser opted out of measurement.",
            "duration": "Persistent",
            "party": "first",
            "storage": "localStorage",
        }
    )
    categories["marketing"]["label"] = "Marketing and attribution"
    support = {
        "key": "support",
        "label": "Support chat",
        "description": "A chat window that remembers the conversation.",
        "required": False,
        "cookies": [],
    }
    document["categories"] = [
        necessary, categories["analytics"], categories["marketing"], support,
    ]  # fmt: skip
    document["consent_ttl_days"] = 180
    path = folder / "itsailor-v2.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    assert service.publish(path, material=True)["version"] == 2


def post_event(http: httpx.Client, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    answer = http.post(
        "/v1/properties/itsailor/consent-events",
        json=body,
        headers={"User-Agent": USER_AGENT, **headers},
    )
    assert answer.status_code == 201, answer.text
    record: dict[str, Any] = answer.json()
    return record


def as_sent(record: dict[str, Any]) -> Sent:
    return Sent(
        record["recorded_at"][:10],
        record["schema_version"],
        record["event_type"],
        record["effective"],
        record["signals"]["gpc"],
        record["event_id"],
    )


# --- the page ------------------------------------------------------------------------------------


async def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def no_horizontal_overflow(page: Page) -> None:
    widths = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways: {widths}"


async def not_covered(page: Page, mark: Locator, tooltip: Locator) -> None:
    """Focused, `mark` shows its tooltip, and the tooltip does not cover it. A chart redraws
    when its width changes (a ResizeObserver, after a viewport change) and replaces its marks:
    a mark focused just before that is gone, so the mark is found and focused again until its
    tooltip shows."""
    for _ in range(20):
        await mark.evaluate("(element) => { element.blur(); element.focus(); }")
        try:
            await tooltip.wait_for(state="visible", timeout=1000)
        except PlaywrightTimeoutError:
            continue
        a, b = await mark.bounding_box(), await tooltip.bounding_box()
        if a is not None and b is not None and await tooltip.is_visible():
            break
    else:
        raise AssertionError(f"{mark} never showed its tooltip when focused")
    overlap_x = min(a["x"] + a["width"], b["x"] + b["width"]) - max(a["x"], b["x"])
    overlap_y = min(a["y"] + a["height"], b["y"] + b["height"]) - max(a["y"], b["y"])
    assert overlap_x <= 0 or overlap_y <= 0, (a, b)


async def sign_in(page: Page, service: LiveService, secret: str) -> None:
    response = await page.goto(f"{service.url}/console/")
    assert response is not None
    assert response.status == 200
    await page.locator("#signin-key").fill(secret)
    await page.locator("#signin-form button[type=submit]").click()
    await page.locator("#nav").wait_for(state="visible")


async def search(
    page: Page, kind: str, value: str, *, per_page: int = 100, fails: bool = False
) -> None:
    await page.locator('#nav a[data-route="person"]').click()
    await page.locator("#person-kind").select_option(kind)
    await page.locator("#person-value").fill(value)
    await page.locator("#person-limit").fill(str(per_page))
    await page.locator("#person-form button[type=submit]").click()
    if not fails:
        await page.locator("#person-results-title").wait_for()


async def download_text(download: Download) -> str:
    path = await download.path()
    return await asyncio.to_thread(Path(path).read_text, encoding="utf-8")


def field_of(scope: Locator, name: str) -> Locator:
    return scope.locator(f'dd[data-field="{name}"]')


async def chip(event: Locator, name: str, category: str) -> str | None:
    """Whether a category is on ("true"/"false") in an event's choices or effective choices."""
    return await event.locator(f'[data-field="{name}"] [data-category="{category}"]').get_attribute(
        "data-on"
    )


async def marks(page: Page, chart: str) -> dict[tuple[str, str], str]:
    """Every mark of a chart: (series, day or "") → data-value; each is also checked to be
    focusable and to say the same in its aria-label and its <title>."""
    found: list[dict[str, str]] = await page.locator(f"#{chart} .mark").evaluate_all(
        """(marks) => marks.map((mark) => ({
            series: mark.dataset.series, day: mark.dataset.day || '', value: mark.dataset.value,
            tabindex: mark.getAttribute('tabindex'), label: mark.getAttribute('aria-label'),
            title: mark.querySelector('title').textContent}))"""
    )
    for mark in found:
        assert mark["tabindex"] == "0", mark
        assert mark["label"] == mark["title"], mark
    return {(mark["series"], mark["day"]): mark["value"] for mark in found}


async def check_charts(page: Page, expected: Expected) -> None:
    tiles = page.locator("#stats-section .tiles")
    assert await tiles.locator('[data-field="events"] .tile-value').inner_text() == str(
        expected.events
    )
    decisions = sum(expected.versions.values())
    assert await tiles.locator('[data-field="decisions"] .tile-value').inner_text() == str(
        decisions
    )
    assert await tiles.locator('[data-field="gpc"] .tile-value').inner_text() == str(expected.gpc)
    assert await marks(page, "chart-optin") == {
        key: percent(*counts) for key, counts in expected.optin.items()
    }
    assert await marks(page, "chart-decisions") == {
        key: str(count) for key, count in expected.decisions.items()
    }
    assert await marks(page, "chart-versions") == {
        (f"v{version}", ""): str(count) for version, count in expected.versions.items()
    }


# --- the scenario --------------------------------------------------------------------------------


async def focus_reaches(page: Page, predicate: str, arg: object = None) -> None:
    """`predicate` true within 5 s, polled from here: `wait_for_function` polls by evaluating its
    text in the page, which the console's CSP (`script-src 'self'`) refuses whenever the first
    look is false."""
    for _ in range(100):
        if await page.evaluate(predicate, arg):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never true: {predicate}")


async def test_a_privacy_officer_finds_exports_and_erases_a_person(
    new_page: NewPage, live_service: LiveService, tmp_path: Path
) -> None:
    key = await api_key(live_service.db_url, "dsr:read", "dsr:erase", "audit:read", "stats:read")
    subject = str(uuid.uuid4())
    other = str(uuid.uuid4())
    with httpx.Client(base_url=live_service.url, timeout=10.0) as http:
        first = post_event(
            http,
            {"subject_id": subject, "event_type": "reject-all", "source": "signal",
             "schema_version": 1, "page_url": "https://itsailor.io/pricing?utm_source=x"},
            **{"Sec-GPC": "1"},
        )  # fmt: skip
        second = post_event(
            http,
            {"subject_id": subject, "event_type": "save-selection", "schema_version": 1,
             "categories": {"analytics": True}, "page_url": "https://itsailor.io/docs"},
        )  # fmt: skip
        publish_second_version(live_service, tmp_path)
        third = post_event(
            http, {"subject_id": subject, "event_type": "accept-all", "schema_version": 2}
        )
        fourth = post_event(
            http, {"subject_id": subject, "event_type": "re-prompt", "schema_version": 2}
        )
        stranger = post_event(
            http, {"subject_id": other, "event_type": "reject-all", "schema_version": 2}
        )
    mine = [first, second, third, fourth]
    today = date.fromisoformat(first["recorded_at"][:10])
    earlier = await seed_earlier_days(live_service.owner_url, today)
    sent = [*earlier, *(as_sent(record) for record in [*mine, stranger])]
    expected = tally(sent)
    # By hand, for the days before today: 2 of 3 granted analytics three days ago, 1 of 2 the day
    # after; two days ago, no one granted functional.
    day = [(today - timedelta(days=n)).isoformat() for n in (3, 2, 1)]
    assert expected.optin[("analytics", day[0])] == (2, 1)
    assert expected.optin[("analytics", day[1])] == (1, 1)
    assert expected.optin[("functional", day[1])] == (0, 2)
    assert expected.decisions[("withdraw", day[2])] == 1
    assert (expected.events, expected.versions, expected.gpc) == (12, {1: 9, 2: 2}, 1)

    page = await new_page()
    violations = await watch_csp(page)
    await page.set_viewport_size(LAPTOP)
    response = await page.goto(f"{live_service.url}/console/")
    assert response is not None
    headers = await response.all_headers()
    assert headers["content-security-policy"] == CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-cache"
    assert headers["etag"]

    # Sign in: the key lives in this tab's sessionStorage only.
    await page.locator("#signin-key").fill(key.secret)
    await page.locator("#signin-form button[type=submit]").click()
    await page.locator("#nav").wait_for(state="visible")
    assert await page.evaluate(f"sessionStorage.getItem('{KEY_STORE}')") == key.secret
    assert await page.evaluate("localStorage.length") == 0
    assert await page.evaluate("document.cookie") == ""
    assert key.secret not in page.url

    # Find the person, two events a page.
    await search(page, "subject_id", subject, per_page=2)
    timeline = page.locator("#timeline > li")
    assert await timeline.count() == 2
    await page.locator("#person-more").click()
    await timeline.nth(3).wait_for()
    ids = await timeline.evaluate_all("(items) => items.map((item) => item.dataset.eventId)")
    assert ids == [record["event_id"] for record in mine]  # the stranger's is not there
    assert subject not in page.url
    gpc_event = timeline.nth(0)
    assert await gpc_event.locator(".badge-type").inner_text() == "reject-all"
    assert await gpc_event.locator(".badge-signal").inner_text() == "GPC"
    assert await field_of(gpc_event, "signals").inner_text() == "GPC yes · DNT no (applied: GPC)"
    assert await field_of(gpc_event, "source").inner_text() == "signal"
    chose = timeline.nth(1)
    assert await chip(chose, "choices", "analytics") == "true"
    assert await chip(chose, "effective", "marketing") == "false"
    assert await timeline.nth(2).locator(".version-button").inner_text() == "itsailor · v2"
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", await gpc_event.locator(".event-time").inner_text()
    )
    # Page URL and user agent, as the history answers them (the query string dropped).
    assert await field_of(gpc_event, "page_url").inner_text() == "https://itsailor.io/pricing"
    assert await field_of(gpc_event, "user_agent").inner_text() == USER_AGENT
    await shot(page, "console-timeline-laptop")

    # The version the banner showed: its content in a dialog; Escape closes it, focus returns.
    version_button = gpc_event.locator(".version-button")
    await version_button.click()
    dialog = page.locator("#version-dialog")
    await dialog.locator('[data-category="functional"]').wait_for()
    assert await page.locator("#version-dialog-title").inner_text() == "itsailor · schema version 1"
    assert await dialog.locator('tr[data-cookie="next-auth.csrf-token"]').count() == 1
    assert await page.evaluate("document.activeElement.hasAttribute('data-close')")
    await shot(page, "console-version-laptop")
    await page.keyboard.press("Escape")
    await dialog.wait_for(state="hidden")
    # The focus moves on the dialog's `close` event, which comes a task after it is hidden.
    button = await version_button.element_handle()
    await focus_reaches(page, "(b) => b === document.activeElement", button)

    # Export: real downloads of the complete history.
    async with page.expect_download() as json_download:
        await page.locator("#export-json").click()
    download = await json_download.value
    assert re.fullmatch(
        r"dsr-export-all-properties-\d{4}-\d\d-\d\d\.json", download.suggested_filename
    )
    exported = json.loads(await download_text(download))
    assert [event["event_id"] for event in exported["events"]] == ids
    assert exported["events"][0]["user_agent"] == USER_AGENT
    async with page.expect_download() as csv_download:
        await page.locator("#export-csv").click()
    download = await csv_download.value
    assert download.suggested_filename.endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(await download_text(download))))
    assert [row["event_id"] for row in rows] == ids
    assert rows[0]["gpc"] == "true"
    async with page.expect_download() as dpv_download:
        await page.locator("#export-dpv").click()
    download = await dpv_download.value
    assert download.suggested_filename.endswith(".jsonld")
    graph = json.loads(await download_text(download))["@graph"]
    records = [node["@id"] for node in graph if node["@type"] == "dpv:ConsentRecord"]
    assert records == [f"urn:uuid:{event_id}" for event_id in ids]

    # Per property: the versions, one opened, a diff of two.
    await page.locator('#nav a[data-route="properties"]').click()
    form = page.locator("#property-form")
    first_day = date.fromisoformat(await form.locator("#stats-from").input_value())
    last_day = date.fromisoformat(await form.locator("#stats-to").input_value())
    assert last_day - first_day == timedelta(days=29)  # the last 30 days by default
    assert abs((last_day - datetime.now(UTC).date()).days) <= 1
    await form.locator("#property-name").fill("itsailor")
    await form.locator("#stats-from").fill((today - timedelta(days=6)).isoformat())
    await form.locator("#stats-to").fill(max(s.day for s in sent))
    await form.locator("button[type=submit]").click()
    versions = page.locator("#versions-table tbody tr")
    await versions.nth(1).wait_for()
    assert await versions.evaluate_all("(rows) => rows.map((row) => row.dataset.version)") == [
        "2",
        "1",
    ]
    assert await versions.nth(0).locator(".status-current").count() == 1
    await versions.nth(0).get_by_role("button", name="Open version 2").click()
    await dialog.locator('[data-category="support"]').wait_for()
    await page.keyboard.press("Escape")
    await dialog.wait_for(state="hidden")
    assert await page.locator("#diff-from").input_value() == "1"
    assert await page.locator("#diff-to").input_value() == "2"
    await page.locator("#diff-run").click()
    diff = page.locator("#diff-result")
    await diff.wait_for()

    async def keys(kind: str) -> list[str]:
        found: list[str] = await diff.locator(f'[data-diff="{kind}"] .diff-list > li').evaluate_all(
            "(items) => items.map((item) => item.dataset.key)"
        )
        return found

    assert await keys("category-added") == ["support"]
    assert await keys("category-removed") == ["functional"]
    assert await keys("category-changed") == ["marketing"]
    assert await diff.locator(
        '[data-diff="category-changed"] [data-field="label"] ins'
    ).inner_text() == ("Marketing and attribution")
    assert await keys("cookie-added") == ["plausible_ignore"]
    assert await keys("cookie-removed") == ["next-auth.csrf-token"]
    assert await keys("cookie-changed") == ["directus_session_token"]
    changed = diff.locator('[data-diff="cookie-changed"] [data-field="duration"] ins')
    assert await changed.inner_text() == "Session"
    assert await keys("other") == ["consent_ttl_days"]
    await shot(page, "console-diff-laptop")

    # Statistics: each mark's numbers are the counts made above.
    await page.locator("#chart-versions .mark").first.wait_for()
    await check_charts(page, expected)
    point = page.locator(f'#chart-optin .mark[data-series="analytics"][data-day="{day[0]}"]')
    await point.hover()
    tooltip = page.locator("#chart-optin-tooltip")
    await tooltip.wait_for(state="visible")
    assert await tooltip.inner_text() == (
        f"analytics, {date.fromisoformat(day[0]).day} "
        f"{date.fromisoformat(day[0]).strftime('%b %Y')}\n66.7% opted in\n2 granted, 1 denied"
    )
    segment = page.locator(f'#chart-decisions .mark[data-series="accept-all"][data-day="{day[0]}"]')
    await segment.focus()
    decisions_tip = page.locator("#chart-decisions-tooltip")
    await decisions_tip.wait_for(state="visible")
    assert "2 of 3 decisions" in await decisions_tip.inner_text()
    await not_covered(page, segment, decisions_tip)
    await segment.focus()
    await shot(page, "console-charts-laptop")

    # Erase: confirmed, with a reference, then the receipt.
    await page.locator('#nav a[data-route="person"]').click()
    await page.locator("#erase-open").click()
    erase = page.locator("#erase-dialog")
    await erase.wait_for(state="visible")
    assert await page.evaluate("document.activeElement.id") == "erase-reference"
    summary = page.locator("#erase-summary")
    assert (
        await field_of(summary, "identifier").inner_text() == f"Consent id (subject_id): {subject}"
    )
    assert await field_of(summary, "property").inner_text() == "every property"
    assert await field_of(summary, "count").inner_text() == "4"
    assert (await field_of(summary, "mode").inner_text()).startswith("delete")
    confirm = page.locator("#erase-confirm")
    assert await confirm.is_disabled()
    await erase.locator('input[value="anonymise"]').check()
    assert (await field_of(summary, "mode").inner_text()).startswith("anonymise")
    await erase.locator('input[value="delete"]').check()
    await page.locator("#erase-reference").fill("   ")
    assert await confirm.is_disabled()
    await page.locator("#erase-reference").fill(REFERENCE)
    assert await confirm.is_enabled()
    assert await confirm.inner_text() == "Delete 4 events"
    await confirm.click()
    receipt = page.locator("#erasure-receipt")
    await receipt.wait_for()
    assert re.fullmatch(r"[0-9a-f-]{36}", await field_of(receipt, "erasure_id").inner_text())
    assert [await field_of(receipt, name).inner_text() for name in
            ("mode", "matched", "deleted", "anonymised", "reference")] == [
        "delete", "4", "4", "0", REFERENCE,
    ]  # fmt: skip
    await shot(page, "console-erasure-receipt")

    # The audit log: the erasure with its reference; filtered; paged.
    await page.locator('#nav a[data-route="audit"]').click()
    row = page.locator(f'#audit-table tr[data-reference="{REFERENCE}"]')
    await row.wait_for()
    assert await row.get_attribute("data-action") == "erasure"
    assert [await row.locator(f'td[data-field="{name}"]').inner_text() for name in
            ("matched", "deleted", "anonymised", "mode")] == ["4", "4", "0", "delete"]  # fmt: skip
    assert await row.locator('td[data-field="actor"]').inner_text() == key.id
    entries = page.locator("#audit-table tbody tr")
    await shot(page, "console-audit-laptop")
    await page.locator("#audit-action").select_option("erasure")
    assert await entries.count() == 1
    await page.locator("#audit-action").select_option("export")
    actions = await entries.evaluate_all("(rows) => rows.map((row) => row.dataset.action)")
    assert actions == ["export"] * 3  # the JSON, CSV and DPV downloads
    await page.locator("#audit-action").select_option("")
    await page.locator("#audit-reference").fill("0042")
    assert await entries.count() == 1
    await page.locator("#audit-clear").click()
    await page.locator("#audit-limit").fill("2")
    await page.locator("#audit-form button[type=submit]").click()
    await page.locator("#audit-more").wait_for()
    assert await entries.count() == 2
    await page.locator("#audit-more").click()
    await entries.nth(3).wait_for()
    assert await entries.count() == 4

    # An erasure lowers the statistics: the subject's three decisions are gone.
    await page.locator('#nav a[data-route="properties"]').click()
    await page.locator("#property-form button[type=submit]").click()
    gone = {first["event_id"], second["event_id"], third["event_id"], fourth["event_id"]}
    after = tally([event for event in sent if event.event_id not in gone])
    await page.locator(
        f'#chart-versions .mark[data-series="v2"][data-value="{after.versions[2]}"]'
    ).wait_for()
    await check_charts(page, after)

    # At a phone's width: charts, timeline and audit reflow; nothing scrolls sideways.
    await page.set_viewport_size(PHONE)
    await page.locator("#chart-optin .mark").first.wait_for()
    await no_horizontal_overflow(page)
    for chart in ("decisions", "versions", "optin"):  # the marks at a narrow plot's edges
        tip = page.locator(f"#chart-{chart}-tooltip")
        await not_covered(page, page.locator(f"#chart-{chart} .mark").last, tip)
        await not_covered(page, page.locator(f"#chart-{chart} .mark").first, tip)
    await shot(page, "console-charts-phone")
    await search(page, "subject_id", other)
    await timeline.first.wait_for()
    assert await timeline.count() == 1
    await no_horizontal_overflow(page)
    await shot(page, "console-timeline-phone")
    await page.locator('#nav a[data-route="audit"]').click()  # each visit loads the newest
    # The newest entry is now the look-up just made (the table shown before began with others).
    await page.locator('#audit-table tbody tr:first-child[data-action="history"]').wait_for()
    assert await entries.count() == 2
    await no_horizontal_overflow(page)
    await shot(page, "console-audit-phone")

    # Sign out: the tab forgets the key; the sign-in form is back.
    await page.locator("#sign-out").click()
    await page.locator("#signin-key").wait_for(state="visible")
    assert await page.evaluate("sessionStorage.length") == 0
    assert await page.locator("#nav").is_hidden()

    log = browser_log(page)
    assert log.errors == []
    assert log.console_errors == []
    assert violations == []


async def test_api_errors_are_shown_and_name_the_missing_scope(
    new_page: NewPage, live_service: LiveService
) -> None:
    """401, 403 and 422 problems reach the alert area; a search by IP address finds the events
    sent from it (the service believes no proxy here: the address is the socket peer's)."""
    reader = await api_key(live_service.db_url, "dsr:read")
    with httpx.Client(base_url=live_service.url, timeout=10.0) as http:
        record = post_event(
            http, {"subject_id": str(uuid.uuid4()), "event_type": "accept-all", "schema_version": 1}
        )

    page = await new_page()
    violations = await watch_csp(page)
    await page.set_viewport_size(LAPTOP)
    # A key the service does not know is refused at sign-in, and not kept.
    await page.goto(f"{live_service.url}/console/")
    await page.locator("#signin-key").fill("csk_not-a-key")
    await page.locator("#signin-form button[type=submit]").click()
    alert = page.locator("#alert")
    await alert.get_by_text("The API key is missing or invalid (401).").wait_for()
    assert await alert.get_attribute("role") == "alert"
    assert "unknown or has been revoked. Sign in again" in await alert.inner_text()
    assert await page.locator("#nav").is_hidden()
    assert await page.evaluate("sessionStorage.length") == 0

    await sign_in(page, live_service, reader.secret)
    await search(page, "subject_id", "not-a-uuid", fails=True)
    await alert.get_by_text("The request is invalid (422).").wait_for()
    assert "subject_id" in await alert.inner_text()
    await search(page, "ip", "127.0.0.1")
    assert await page.locator("#timeline > li").evaluate_all(
        "(items) => items.map((item) => item.dataset.eventId)"
    ) == [record["event_id"]]
    # A consent id pasted in another spelling of the same UUID is searched in the API's one form,
    # and the field shows that form.
    subject = record["subject_id"]
    results = page.locator("#person-results")
    for pasted in (f"{{{subject.upper()}}}", f"urn:uuid:{subject}", subject.replace("-", "")):
        await search(page, "ip", "127.0.0.1")  # a timeline that is not the subject's first
        await field_of(results, "identifier").get_by_text("IP address: 127.0.0.1").wait_for()
        await search(page, "subject_id", f"  {pasted} ")
        searched = f"Consent id (subject_id): {subject}"
        await field_of(results, "identifier").get_by_text(searched, exact=True).wait_for()
        assert await page.locator("#person-value").input_value() == subject
        assert await page.locator("#timeline > li").evaluate_all(
            "(items) => items.map((item) => item.dataset.eventId)"
        ) == [record["event_id"]]
    await page.locator('#nav a[data-route="audit"]').click()
    await alert.get_by_text("This API key lacks the scope audit:read (403).").wait_for()

    log = browser_log(page)
    assert log.errors == []
    # The only console errors are Chromium's own lines for the refused requests.
    assert all(re.search(r"status of (401|403|422)", line) for line in log.console_errors), (
        log.console_errors
    )
    assert violations == []


async def hold_paged_requests(page: Page, path: str) -> asyncio.Queue[Route]:
    """Requests to `path` that ask for a further page (a `cursor`) wait in the queue, unanswered,
    until the test lets them go (`route.continue_()`): a slow answer, on cue."""
    held: asyncio.Queue[Route] = asyncio.Queue()

    async def handle(route: Route) -> None:
        if "cursor" in route.request.url or "cursor" in (route.request.post_data or ""):
            await held.put(route)
        else:
            await route.continue_()

    await page.route(f"**{path}*", handle)
    return held


async def release(page: Page, route: Route) -> None:
    """Let a held request go; back once its answer has been read and the page has had time to
    act on it."""
    async with page.expect_event("requestfinished", lambda request: request == route.request):
        await route.continue_()
    await page.wait_for_timeout(300)


async def test_a_late_page_never_joins_a_newer_search(
    new_page: NewPage, live_service: LiveService
) -> None:
    """A Load more answered after another search (or after Load newest) is dropped, not added to
    the new timeline; Erase… with pages still to load gives the focus back to Erase…"""
    key = await api_key(live_service.db_url, "dsr:read", "dsr:erase", "audit:read")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    with httpx.Client(base_url=live_service.url, timeout=10.0) as http:
        for subject, events in ((first, 3), (second, 1)):
            for _ in range(events):
                body = {"subject_id": subject, "event_type": "accept-all", "schema_version": 1}
                post_event(http, body)
    page = await new_page()
    await page.set_viewport_size(LAPTOP)
    await sign_in(page, live_service, key.secret)
    held = await hold_paged_requests(page, "/v1/dsr/history")
    await search(page, "subject_id", first, per_page=2)
    await page.locator("#person-more").click()
    late = await held.get()
    await search(page, "subject_id", second, per_page=2)
    shown = page.locator("#person-count")
    await shown.get_by_text("1 event", exact=True).wait_for()
    await release(page, late)
    consent_ids = page.locator('#timeline [data-field="subject_id"]')
    assert await consent_ids.all_inner_texts() == [second]
    assert await shown.inner_text() == "1 event"

    # While another search is on its way, the timeline on screen keeps its events but not its
    # buttons: they took the new search's query (an export of someone else than the one shown).
    await page.unroute("**/v1/dsr/history*")
    waiting: asyncio.Queue[Route] = asyncio.Queue()

    async def hold_first(route: Route) -> None:
        await (
            waiting.put(route) if first in (route.request.post_data or "") else route.continue_()
        )

    await page.route("**/v1/dsr/history*", hold_first)
    await page.locator("#person-value").fill(first)
    await page.locator("#person-form button[type=submit]").click()
    pending = await waiting.get()
    assert await consent_ids.all_inner_texts() == [second]  # still on screen
    for control in ("#export-json", "#export-csv", "#export-dpv", "#erase-open"):
        assert await page.locator(control).is_disabled(), control
    await release(page, pending)
    await page.unroute("**/v1/dsr/history*")

    # Erase… on a timeline with pages to load: the service counts them all (3, two loaded), and
    # when the dialog closes the focus is on Erase…
    await search(page, "subject_id", first, per_page=2)
    # The previous timeline's title is still there when `search` returns: wait for this one's
    # events, or the focus lands on the old Erase… button as it is replaced.
    await page.locator('#timeline [data-field="subject_id"]', has_text=first).first.wait_for()
    await page.locator("#erase-open").focus()
    await page.keyboard.press("Enter")
    erase = page.locator("#erase-dialog")
    await erase.wait_for(state="visible")
    assert await field_of(page.locator("#erase-summary"), "count").inner_text() == "3"
    assert await page.locator("#timeline .event").count() == 2
    await page.keyboard.press("Escape")
    await erase.wait_for(state="hidden")
    await focus_reaches(page, "() => document.activeElement.id === 'erase-open'")

    # One erasure, whatever is clicked or typed while it is on its way.
    erasures: asyncio.Queue[Route] = asyncio.Queue()
    await page.route("**/v1/dsr/erasures", erasures.put)
    await page.locator("#erase-open").click()
    await erase.wait_for(state="visible")
    await page.locator("#erase-reference").fill("DSR-2")
    confirm = page.locator("#erase-confirm")
    await confirm.click()
    held_erasure = await erasures.get()
    await erase.locator('input[value="anonymise"]').check()
    await page.locator("#erase-reference").fill("DSR-2b")
    assert await confirm.is_disabled()
    await page.locator("#erase-reference").press("Enter")
    await page.keyboard.press("Escape")  # the dialog waits for the answer: it shows the receipt
    assert await erase.locator("[data-close]").is_disabled()
    await page.wait_for_timeout(300)
    assert await erase.is_visible()
    assert erasures.empty()
    await held_erasure.continue_()
    await page.locator("#erasure-receipt").wait_for()
    assert await field_of(page.locator("#erasure-receipt"), "matched").inner_text() == "3"
    # The audit log: a Load more answered after Load newest is dropped too.
    held = await hold_paged_requests(page, "/v1/dsr/audit")
    await page.locator('#nav a[data-route="audit"]').click()
    entries = page.locator("#audit-table tbody tr")
    await entries.first.wait_for()
    await page.locator("#audit-limit").fill("2")
    await page.locator("#audit-form button[type=submit]").click()
    await page.locator("#audit-more").click()
    late = await held.get()
    await page.locator("#audit-form button[type=submit]").click()
    await page.locator("#audit-count").get_by_text("2 shown of 2 loaded").wait_for()
    await release(page, late)
    assert (await page.locator("#audit-count").inner_text()).startswith("2 shown of 2 loaded")
    assert await entries.count() == 2
    assert browser_log(page).errors == []


async def revoke(db_url: str, key_id: str) -> None:
    """`consent-service keys revoke`, as the CLI does it."""
    engine = create_engine(db_url, pool_size=1)
    try:
        async with create_sessionmaker(engine).begin() as session:
            await revoke_key(session, key_id)
    finally:
        await engine.dispose()


async def test_a_key_revoked_mid_session_is_forgotten(
    new_page: NewPage, live_service: LiveService
) -> None:
    """A 401 after sign-in (the key revoked meanwhile): the console forgets the key and shows the
    sign-in form with the reason, and sends the dead key no more (each failed key check counts
    toward the client address's 429)."""
    key = await api_key(live_service.db_url, "dsr:read", "audit:read")
    subject = str(uuid.uuid4())
    with httpx.Client(base_url=live_service.url, timeout=10.0) as http:
        post_event(http, {"subject_id": subject, "event_type": "accept-all", "schema_version": 1})
    page = await new_page()
    await page.set_viewport_size(LAPTOP)
    sent_key: list[str] = []

    async def note_key(route: Route) -> None:
        if await route.request.header_value("authorization"):
            sent_key.append(route.request.url)
        await route.continue_()

    await page.route("**/v1/**", note_key)
    await sign_in(page, live_service, key.secret)
    await search(page, "subject_id", subject)
    await page.locator("#timeline > li").first.wait_for()
    await revoke(live_service.db_url, key.id)
    sent_key.clear()

    await page.locator("#person-form button[type=submit]").click()
    await page.locator("#signin-key").wait_for(state="visible")
    alert = page.locator("#alert")
    assert "The API key is missing or invalid (401)." in await alert.inner_text()
    assert "Sign in again" in await alert.inner_text()
    assert await page.evaluate("sessionStorage.length") == 0
    assert await page.locator("#nav").is_hidden()
    assert await page.evaluate("document.activeElement.id") == "signin-key"
    assert await page.locator("#person-results").inner_text() == ""  # nothing shown stays
    # The views (the audit log loads itself when shown) send no key any more.
    for route in ("audit", "person", "properties"):
        await page.evaluate(f"location.hash = '#/{route}'")
        await page.locator("#signin-key").wait_for(state="visible")
    await page.wait_for_timeout(300)
    assert len(sent_key) == 1, sent_key

    # Signing in again with a valid key works at once (no 429 earned on the way).
    fresh = await api_key(live_service.db_url, "dsr:read", "audit:read")
    await page.locator("#signin-key").fill(fresh.secret)
    await page.locator("#signin-form button[type=submit]").click()
    await page.locator("#nav").wait_for(state="visible")
    assert browser_log(page).errors == []


async def test_the_version_dialog_fits_a_phone(
    new_page: NewPage, live_service: LiveService
) -> None:
    """At 390 px the version dialog's cookie table wraps a long cookie name (ailabrix's
    `static.cloudflareinsights.com`): neither the page nor the dialog scrolls sideways."""
    key = await api_key(live_service.db_url, "stats:read")
    page = await new_page()
    await page.set_viewport_size(PHONE)
    await sign_in(page, live_service, key.secret)
    await page.locator('#nav a[data-route="properties"]').click()
    await page.locator("#property-name").fill("ailabrix")
    await page.locator("#property-form button[type=submit]").click()
    await page.get_by_role("button", name="Open version 1").click()
    dialog = page.locator("#version-dialog")
    await dialog.locator('tr[data-cookie="static.cloudflareinsights.com"]').wait_for()
    await no_horizontal_overflow(page)
    overflowing = await dialog.evaluate(
        """(dialog) => [dialog, ...dialog.querySelectorAll('td')]
            .filter((element) => element.scrollWidth > element.clientWidth)
            .map((element) => `${element.tagName} ${element.scrollWidth} > ${element.clientWidth}`)"""
    )
    assert overflowing == []
    await shot(page, "console-version-phone")


async def test_a_withdrawal_in_writing_is_recorded_from_the_console(
    new_page: NewPage, live_service: LiveService
) -> None:
    """Withdraw… on a person found by consent id: a reference, one request, the receipt, and the
    timeline again with the `withdraw` the DSR team recorded; by IP (shared) it is off."""
    key = await api_key(live_service.db_url, "dsr:read", "dsr:withdraw")
    subject = str(uuid.uuid4())
    with httpx.Client(base_url=live_service.url, timeout=10.0) as http:
        post_event(http, {"subject_id": subject, "event_type": "accept-all", "schema_version": 1})
    page = await new_page()
    await page.set_viewport_size(LAPTOP)
    await sign_in(page, live_service, key.secret)
    await search(page, "ip", "127.0.0.1")
    assert await page.locator("#withdraw-open").is_disabled()
    await search(page, "subject_id", subject)
    await page.locator("#timeline > li").first.wait_for()
    await page.locator("#withdraw-open").click()
    dialog = page.locator("#withdraw-dialog")
    await dialog.wait_for(state="visible")
    assert await page.evaluate("document.activeElement.id") == "withdraw-reference"
    confirm = page.locator("#withdraw-confirm")
    assert await confirm.is_disabled()
    await page.locator("#withdraw-reference").fill("LETTER-9")
    await confirm.click()
    receipt = page.locator("#withdrawal-receipt")
    await receipt.wait_for()
    assert await field_of(receipt, "withdrawn").inner_text() == "1 consent id and property pair"
    assert await field_of(receipt, "reference").inner_text() == "LETTER-9"
    types = page.locator("#timeline > li")
    await types.nth(1).wait_for()
    assert [await item.get_attribute("data-event-type") for item in await types.all()] == [
        "accept-all",
        "withdraw",
    ]
    assert await field_of(types.nth(1), "source").inner_text() == "dsr"

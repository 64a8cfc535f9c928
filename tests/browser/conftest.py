"""Fixtures of the real-browser tests: the system's Chromium driven by Playwright (async API), the
example site served over HTTP from two origins, and the real service as a subprocess.

    chromium_path  session  the browser binary; skip (or fail, CONSENT_BROWSER_TESTS=required)
    browser        session  one headless Chromium for the whole run
    new_page       test     `await new_page(gpc=False, dnt=False, context=None)`: a page, with its
                            console and errors collected (tests.browser.browser_log)
    static_site    session  examples/web/ at http://127.0.0.1:PORT (the origin the service allows)
    other_site     session  the same folder at http://localhost:PORT (an origin it does not)
    live_service   test     the service on this test's database (tests.browser.LiveService)

Playwright's own browsers are never used (no `playwright install`): Chromium comes from the
system, so the tests run offline.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Page,
    async_playwright,
)

from tests.browser import (
    BLANK_PAGE,
    README_PAGE,
    BrowserLog,
    LiveService,
    NewPage,
    _publish_file,
    readme_page,
)
from tests.factories import api_key
from tests.live import service_env, serving

ROOT = Path(__file__).resolve().parents[2]
WEB_ROOT = ROOT / "examples" / "web"
EXAMPLE_SCHEMAS = (ROOT / "examples/schemas/ailabrix.yaml", ROOT / "examples/schemas/itsailor.yaml")

CHROMIUM_FLAGS = (
    "--no-sandbox",  # the tests may run as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Without it navigator.webdriver is true and vanilla-cookieconsent hides itself from bots.
    "--disable-blink-features=AutomationControlled",
)
# A page's every wait (clicks, selectors, navigation) gives up after this many milliseconds.
PAGE_TIMEOUT_MS = 15_000

GPC_SCRIPT = """Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {
    get() { return true; }, configurable: true, enumerable: true });"""
DNT_SCRIPT = """Object.defineProperty(Navigator.prototype, 'doNotTrack', {
    get() { return '1'; }, configurable: true, enumerable: true });"""


# --- the browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The system's Chromium: CONSENT_CHROMIUM, else `chromium` or `chromium-browser` on PATH.
    Missing, the browser tests skip, or fail where CONSENT_BROWSER_TESTS=required (CI)."""
    configured = os.environ.get("CONSENT_CHROMIUM")
    if configured:
        if not (Path(configured).is_file() and os.access(configured, os.X_OK)):
            pytest.fail(f"CONSENT_CHROMIUM={configured!r} is not an executable file")
        return configured
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = (
        "the browser tests need Chromium: install it (Debian/Ubuntu: "
        "apt-get install --no-install-recommends chromium; macOS: brew install --cask chromium) "
        "or point CONSENT_CHROMIUM at a Chromium or Chrome binary "
        "(`playwright install` is not used)"
    )
    if os.environ.get("CONSENT_BROWSER_TESTS") == "required":
        pytest.fail(f"CONSENT_BROWSER_TESTS=required and no browser: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    """One headless Chromium for the session (Playwright launches it with `--headless`)."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium_path, args=list(CHROMIUM_FLAGS)
        )
        yield launched
        await launched.close()


def _attach_log(page: Page) -> None:
    """Collect the page's console and errors into a BrowserLog; also set as page attributes."""
    log = BrowserLog()

    def on_console(message: ConsoleMessage) -> None:
        line = f"{message.type}: {message.text}"
        log.console.append(line)
        if message.type == "error":
            log.console_errors.append(line)

    def on_error(error: Error) -> None:
        log.errors.append(f"{error.name}: {error.message}")

    def on_crash(_: Page) -> None:
        log.errors.append("page crashed")

    page.on("console", on_console)
    page.on("pageerror", on_error)
    page.on("crash", on_crash)
    setattr(page, "browser_log", log)
    setattr(page, "console_log", log.console)
    setattr(page, "console_errors", log.console_errors)
    setattr(page, "js_errors", log.errors)


@pytest.fixture
async def new_page(browser: Browser) -> AsyncIterator[NewPage]:
    """A factory of pages (see tests.browser.NewPage): each call without `context` is a new
    visitor (a new browser context: no cookies, storage or cache); every page opened in those
    contexts, by the factory, by `page.context.new_page()` or as a popup, collects its console
    messages and errors (tests.browser.browser_log). The contexts close after the test."""
    contexts: list[BrowserContext] = []

    async def make(
        gpc: bool = False, dnt: bool = False, *, context: BrowserContext | None = None
    ) -> Page:
        headers = {**({"Sec-GPC": "1"} if gpc else {}), **({"DNT": "1"} if dnt else {})}
        scripts = [script for on, script in ((gpc, GPC_SCRIPT), (dnt, DNT_SCRIPT)) if on]
        if context is None:
            context = await browser.new_context(locale="en-US", extra_http_headers=headers)
            contexts.append(context)
            context.set_default_timeout(PAGE_TIMEOUT_MS)
            context.on("page", _attach_log)
            for script in scripts:
                await context.add_init_script(script)
            page = await context.new_page()
        else:
            page = await context.new_page()
            for script in scripts:
                await page.add_init_script(script)
            if headers:
                await page.set_extra_http_headers(headers)
        if not hasattr(page, "browser_log"):  # a context the factory did not make
            _attach_log(page)
        return page

    yield make
    for context in contexts:
        with contextlib.suppress(Error):
            await context.close()


# --- the sites -----------------------------------------------------------------------------------


BLANK_HTML = (
    "<!doctype html><html lang=en><meta charset=utf-8><title>blank</title>"
    '<link rel=icon href="data:,"><body></body>'
)


class _QuietHandler(SimpleHTTPRequestHandler):
    """Files of the folder, quietly; BLANK_PAGE, an empty document made here (not a file), for a
    test that needs the site's origin without the example page and its banner; and an empty 204
    for a missing /favicon.ico (a 404 would be an error in every page's console)."""

    # Module scripts need a JavaScript type whatever the machine's mime.types says.
    extensions_map = {  # noqa: RUF012 - the class attribute http.server reads
        **SimpleHTTPRequestHandler.extensions_map,
        ".html": "text/html",
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".css": "text/css",
        ".json": "application/json",
        ".svg": "image/svg+xml",
        ".map": "application/json",
    }

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/favicon.ico" and not Path(self.translate_path(path)).exists():
            self.send_response(204)  # no icon, and no 404 in the page's console either
            self.end_headers()
            return
        if path == README_PAGE:
            api = parse_qs(self.path.partition("?")[2]).get("api", [""])[0]
            body = readme_page(api).encode()
        elif path == BLANK_PAGE:
            body = BLANK_HTML.encode()
        else:
            super().do_GET()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _serve_folder(folder: Path) -> Iterator[int]:
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="static-site", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="session")
def static_site() -> Iterator[str]:
    """examples/web/ over HTTP: `http://127.0.0.1:PORT`, no trailing slash (and, at BLANK_PAGE,
    an empty document). The live service lists this origin in CONSENT_CORS_ORIGINS."""
    with _serve_folder(WEB_ROOT) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def other_site() -> Iterator[str]:
    """The same folder on another port, reached as `http://localhost:PORT`: another origin,
    one the live service does not allow."""
    with _serve_folder(WEB_ROOT) as port:
        yield f"http://localhost:{port}"


# --- the service ---------------------------------------------------------------------------------


@pytest.fixture
async def live_service(
    owner_url: str, db_url: str, static_site: str, tmp_path: Path
) -> AsyncIterator[LiveService]:
    """`python -m service serve --workers 1` on this test's database as the least-privileged
    role, in production mode, allowing the origin `static_site`, with ailabrix and itsailor
    version 1 published (as the owner, like `consent-service schema publish`). Answers once
    GET /readyz is 200; stopped (SIGTERM, then SIGKILL after 10 s) after the test."""
    for schema in EXAMPLE_SCHEMAS:
        await _publish_file(owner_url, schema, material=True)
    key = await api_key(db_url, "dsr:read")
    log_path = tmp_path / f"service-{uuid.uuid4().hex[:8]}.log"
    async with serving(service_env(db_url, cors_origins=static_site), log_path) as url:
        yield LiveService(
            url=url,
            owner_url=owner_url,
            db_url=db_url,
            log_path=log_path,
            cors_origin=static_site,
            dsr_key=key.secret,
        )

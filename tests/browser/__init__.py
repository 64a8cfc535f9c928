"""Real-browser tests: a headless Chromium (driven by Playwright) on the example site, talking to
the real service over HTTP. The fixtures are in `conftest.py`; the types their users annotate with
are here, so a test writes `from tests.browser import LiveService, NewPage, browser_log`.

The browser is the system's Chromium (`CONSENT_CHROMIUM`, else `chromium` on PATH; Debian:
`apt-get install chromium`), never one downloaded by `playwright install`. Without it the tests
skip, unless `CONSENT_BROWSER_TESTS=required` (as in CI), where they fail.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
from playwright.async_api import BrowserContext, Page

from service.consent_schema.document import load_document_file
from service.consent_schema.publishing import publish
from service.core.cli_support import CLI_ACTOR
from service.core.db import create_engine, create_sessionmaker

T = TypeVar("T")

# Both sites also answer this path with an empty HTML document (no file behind it): a test that
# needs a page on the site's origin, without the example page's banner, opens `site + BLANK_PAGE`.
# (A document made with `page.route(...).fulfill` will not do: Chromium puts it in the public
# address space, and Local Network Access then blocks its requests to the loopback API.)
BLANK_PAGE = "/__blank.html"


# The README's "Add it to your site" snippet, as a page: the whole glue a site writes.
README_PAGE = "/__readme-snippet.html"
README_API = "https://consent.example.com"


def readme_snippet() -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Add it to your site", 1)[1]
    return section.split("```html\n", 1)[1].split("```", 1)[0]


def readme_page(api: str) -> str:
    """The snippet in an otherwise empty page, with the service at `api` for README_API, and an
    optional script that records whether it ran."""
    snippet = readme_snippet().replace(README_API, api)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>snippet</title>'
        "</head><body>"
        f"{snippet}"
        '<script type="text/plain" data-category="analytics">window.analyticsRan = true;</script>'
        "</body></html>"
    )


@dataclass
class BrowserLog:
    """What a page said while the test ran, across navigations, in order.

    `console` holds every console message as `"<type>: <text>"` (`"error: Failed to load …"`);
    `console_errors` only those of type `error` (also what a refused CORS request or a failed
    load prints); `errors` the page's uncaught exceptions and unhandled rejections as
    `"<Name>: <message>"`, and `"page crashed"` if the renderer died. A test asserts
    `browser_log(page).errors == []` to prove the page ran without a JavaScript error.
    """

    console: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def browser_log(page: Page) -> BrowserLog:
    """The log `new_page` attached to this page (or to any page opened later in its context).
    The same lists are also the page's attributes `console_log`, `console_errors` and
    `js_errors`; this accessor is for code that mypy checks."""
    log = getattr(page, "browser_log", None)
    if not isinstance(log, BrowserLog):
        raise LookupError(f"{page.url}: this page was not opened in a context from new_page")
    return log


class NewPage(Protocol):
    """The `new_page` fixture: `await new_page(gpc=True)`.

    Without `context`, a new browser context (fresh cookies, storage and cache) with one page.
    With `context` (`page.context` of an earlier page), one more page in that context, sharing
    its storage, as a second tab of the same visitor. `gpc` makes `navigator.globalPrivacyControl`
    true and sends `Sec-GPC: 1` with every request; `dnt` makes `navigator.doNotTrack` `'1'` and
    sends `DNT: 1`. In a new context the signals belong to the context (every page in it, popups
    too); in a reused one they are added to the new page only, on top of the context's own.
    """

    async def __call__(
        self, gpc: bool = False, dnt: bool = False, *, context: BrowserContext | None = None
    ) -> Page: ...


@dataclass
class LiveService:
    """The real service, running as its own process (`python -m service serve`, production mode)
    on the test's database as the least-privileged role, with both example schemas published.

    `url` is the API's base (`http://127.0.0.1:PORT`, no trailing slash), `owner_url` the test
    database as its owner, `db_url` as the service's role, `log_path` the service's stdout and
    stderr (JSON lines), `cors_origin` the one origin it allows (the `static_site`).
    """

    url: str
    owner_url: str
    db_url: str
    log_path: Path
    cors_origin: str
    dsr_key: str  # secret of a key with the scope dsr:read

    def publish(self, path: Path, material: bool = True) -> dict[str, Any]:
        """Publish the schema file at `path` as its property's next version, as
        `consent-service schema publish PATH [--non-material]` does (same functions, actor
        `cli`), and return once the service answers that version as current. The result is
        what the CLI prints with `--json`: property, version, created, material,
        last_material_version, content_hash. Blocking: call it between browser steps."""
        result = _run(_publish_file(self.owner_url, path, material=material))
        deadline = 10.0
        with httpx.Client(base_url=self.url, timeout=5.0) as http:
            for _ in range(int(deadline / 0.05)):
                answer = http.get(f"/v1/properties/{result['property']}/schema")
                if answer.status_code == 200 and answer.json()["version"] >= result["version"]:
                    return result
                time.sleep(0.05)
        raise AssertionError(
            f"the service did not serve {result['property']} version {result['version']} "
            f"within {deadline:.0f} s of its publication (log: {self.log_path})"
        )

    def export(self, property: str, subject_id: str) -> dict[str, Any]:
        """The subject's complete history on `property`, exactly as the DSR export API answers
        it (`POST /v1/dsr/exports`, format json): `events` with their evidence columns and the
        schema `versions` they refer to. Blocking."""
        answer = httpx.post(
            f"{self.url}/v1/dsr/exports",
            json={"subject_id": subject_id, "property": property},
            headers={"Authorization": f"Bearer {self.dsr_key}"},
            timeout=10.0,
        )
        if answer.status_code != 200:
            raise AssertionError(f"DSR export answered {answer.status_code}: {answer.text}")
        body: dict[str, Any] = answer.json()
        return body

    def log(self) -> str:
        """The service's log so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


async def _publish_file(owner_url: str, path: Path, *, material: bool) -> dict[str, Any]:
    """The CLI's `schema publish` (service/consent_schema/cli.py) without its process: the same
    document loader and `publish`, in one transaction as the tables' owner."""
    document = load_document_file(path)
    engine = create_engine(owner_url, pool_size=1, application_name="consent-service-cli")
    try:
        async with create_sessionmaker(engine).begin() as session:
            version, created = await publish(
                session, document, material=material, published_by=CLI_ACTOR
            )
    finally:
        await engine.dispose()
    return {
        "property": version.property,
        "version": version.version,
        "created": created,
        "material": version.material,
        "last_material_version": version.last_material_version,
        "content_hash": version.content_hash,
    }


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end from sync code that may itself be inside the test's event
    loop: on a thread of its own, with a loop of its own."""
    results: list[T] = []
    failures: list[BaseException] = []

    def target() -> None:
        try:
            results.append(asyncio.run(work))
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=target, name="browser-tests-publish")
    thread.start()
    thread.join()
    if failures:
        raise failures[0]
    return results[0]

"""The browser client as the service serves it: a stable, versioned, long-cached path, and a
released version never changes (web/SHA256SUMS)."""

from __future__ import annotations

import hashlib
import re

import httpx
import pytest

from service.banner.client import CLIENT_VERSION, RELEASED, VERSIONS, WEB
from service.consent_schema.document import load_document_file
from service.core.resources import EXAMPLE_SCHEMAS

SHIPPED = ("consent.js", "consent-cookieconsent.js", "consent.d.ts")


def test_a_released_client_file_never_changes() -> None:
    """Sites cache /client/<version>/… for a year: changing a file means a new CLIENT_VERSION,
    with its line in web/SHA256SUMS (older lines stay, as the record of what was served)."""
    recorded = recorded_hashes()
    for name in SHIPPED:
        text = (WEB / name).read_text()
        assert CLIENT_VERSION in text.splitlines()[0], name
        actual = hashlib.sha256((WEB / name).read_bytes()).hexdigest()
        assert recorded.get((CLIENT_VERSION, name)) == actual, (
            f"{name} changed after {CLIENT_VERSION} was released: bump CLIENT_VERSION "
            f"(service/banner/client.py and the files' headers) and add "
            f"'<version>  {name}  {actual}' to service/banner/web/SHA256SUMS"
        )


async def test_the_client_is_served_at_its_versioned_path(client: httpx.AsyncClient) -> None:
    for name in SHIPPED:
        response = await client.get(f"/client/{CLIENT_VERSION}/{name}")
        assert response.status_code == 200, name
        assert response.content == (WEB / name).read_bytes()
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["cross-origin-resource-policy"] == "cross-origin"
        expected = "text/javascript" if name.endswith(".js") else "text/plain"
        assert response.headers["content-type"].startswith(expected)
        again = await client.get(
            f"/client/{CLIENT_VERSION}/{name}", headers={"If-None-Match": response.headers["etag"]}
        )
        assert (again.status_code, again.content) == (304, b"")


def recorded_hashes() -> dict[tuple[str, str], str]:
    recorded = {}
    for line in (WEB / "SHA256SUMS").read_text().splitlines():
        version, name, digest = line.split()
        recorded[version, name] = digest
    return recorded


def test_every_earlier_release_is_kept_as_it_was_released() -> None:
    """A site that pinned an earlier version keeps its banner when the service is updated: each
    version web/SHA256SUMS records is still here, byte for byte, in web/released/<version>/."""
    recorded = recorded_hashes()
    earlier = {version for version, _ in recorded} - {CLIENT_VERSION}
    assert earlier, "SHA256SUMS records no earlier release"
    assert {folder.name for folder in RELEASED.iterdir()} == earlier
    for version in earlier:
        for name in SHIPPED:
            path = RELEASED / version / name
            assert version in path.read_text().splitlines()[0], path
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            assert recorded[version, name] == digest, f"{path} is not the file {version} released"


async def test_an_earlier_release_is_served_as_it_was(client: httpx.AsyncClient) -> None:
    for version in set(VERSIONS) - {CLIENT_VERSION}:
        for name in SHIPPED:
            response = await client.get(f"/client/{version}/{name}")
            assert response.status_code == 200, (version, name)
            assert response.content == (RELEASED / version / name).read_bytes()
            assert response.content != (WEB / name).read_bytes()
            assert response.headers["cache-control"] == "public, max-age=31536000, immutable"


async def test_another_version_or_file_is_a_precise_404(client: httpx.AsyncClient) -> None:
    for path in ("/client/0.9.0/consent.js", f"/client/{CLIENT_VERSION}/SHA256SUMS"):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        detail = response.json()["detail"]
        assert f"this service serves version {CLIENT_VERSION}" in detail
        assert "and the earlier 1.0.2, 1.0.1, 1.0.0" in detail


# --- what the client stores, and what the example schemas tell visitors it stores -----------------

EXAMPLE_PROPERTIES = ("ailabrix", "itsailor")


def client_storage_keys(property_name: str) -> set[str]:
    """The localStorage keys the shipped client and its cookieconsent integration write for a
    property with their default options, read from the files themselves (docs/banner.md, "What
    the browser keeps")."""
    client = (WEB / "consent.js").read_text()
    integration = (WEB / "consent-cookieconsent.js").read_text()
    store = re.findall(r"new Store\(options\.storageKey \|\| '([^']+)' \+ this\.property\)", client)
    suffixes = set(re.findall(r"\.store\.(?:read|write)\('([^']*)'", client))
    copy = re.findall(r"name: options\.storageName \|\| '([^']+)' \+ client\.property", integration)
    assert len(store) == len(copy) == 1, "the client's storage defaults moved: update this test"
    assert suffixes == {"", ":outbox"}, suffixes
    return {store[0] + property_name + suffix for suffix in suffixes} | {copy[0] + property_name}


def test_the_client_sets_no_cookie() -> None:
    """It keeps everything in localStorage; the integration only deletes cookies (Max-Age=0)."""
    for name in ("consent.js", "consent-cookieconsent.js"):
        for line in (WEB / name).read_text().splitlines():
            if re.search(r"document\.cookie\s*=(?!=)", line):
                assert "Max-Age=0" in line, (name, line)


@pytest.mark.parametrize("property_name", EXAMPLE_PROPERTIES)
def test_an_example_schema_lists_exactly_the_consent_storage_the_client_writes(
    property_name: str,
) -> None:
    """The banner's cookie table is built from the schema, so it tells visitors what the page
    stores: the client's entries are listed, as localStorage, in the required category, and no
    other entry claims to hold the consent choice (a policy's own consent cookie, which this
    client never sets, would tell visitors about storage that does not exist)."""
    document = load_document_file(EXAMPLE_SCHEMAS / f"{property_name}.yaml")
    written = client_storage_keys(property_name)
    (required,) = [category for category in document.categories if category.required]
    listed = {entry.name: entry for entry in required.cookies}
    for name in sorted(written):
        assert name in listed, f"{property_name}: the client writes {name!r}; list it"
        assert (listed[name].storage, listed[name].party) == ("localStorage", "first"), name
    about_consent = {
        entry.name
        for category in document.categories
        for entry in category.cookies
        if "consent" in entry.purpose.lower()
    }
    assert about_consent == written, (
        f"{property_name}: entries that say they keep the consent choice but the client does not "
        f"write: {sorted(about_consent - written)}"
    )

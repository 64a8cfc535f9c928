"""The browser client as the service serves it: a stable, versioned, long-cached path, and a
released version never changes (web/SHA256SUMS)."""

from __future__ import annotations

import hashlib

import httpx

from service.banner.client import CLIENT_VERSION, WEB

SHIPPED = ("consent.js", "consent-cookieconsent.js", "consent.d.ts")


def test_a_released_client_file_never_changes() -> None:
    """Sites cache /client/<version>/… for a year: changing a file means a new CLIENT_VERSION,
    with its line in web/SHA256SUMS (older lines stay, as the record of what was served)."""
    recorded = {}
    for line in (WEB / "SHA256SUMS").read_text().splitlines():
        version, name, digest = line.split()
        recorded[version, name] = digest
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


async def test_another_version_or_file_is_a_precise_404(client: httpx.AsyncClient) -> None:
    for path in ("/client/0.9.0/consent.js", f"/client/{CLIENT_VERSION}/SHA256SUMS"):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert f"this service serves version {CLIENT_VERSION}" in response.json()["detail"]

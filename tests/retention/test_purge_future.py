"""`retention purge --as-of` later than now deletes events that are not yet due: one mistyped
year would wipe evidence still needed. It is refused (exit 2, nothing read or written) unless it
is a `--dry-run` or the operator says `--allow-future` (docs/retention.md, "The purge")."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from tests.conftest import database_url
from tests.factories import event, example, published
from tests.retention.test_purge import purge, with_retention

LATER = (datetime.now(UTC) + timedelta(days=10)).isoformat()


async def purge_runs(db: asyncpg.Connection) -> int:
    count = await db.fetchval("SELECT count(*) FROM dsr_audit WHERE action = 'retention-purge'")
    assert isinstance(count, int)
    return count


async def test_a_purge_as_of_a_later_date_is_refused_without_dry_run_or_allow_future(
    client: httpx.AsyncClient, db: asyncpg.Connection, db_url: str, owner_url: str
) -> None:
    await published(db_url, with_retention(example("itsailor"), 1, 1))
    for _ in range(3):
        response = await client.post("/v1/properties/itsailor/consent-events", json=event())
        assert response.status_code == 201, response.text

    for extra in ((), ("--json",)):
        code, out = await asyncio.to_thread(purge, owner_url, "--as-of", LATER, *extra)
        assert code == 2, out
        assert out.startswith(f"error: --as-of: {LATER!r} is later than now ("), out
        assert "deletes events that are not yet due" in out
        assert "add --dry-run to count them, or --allow-future to delete them anyway" in out
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 3
    assert await purge_runs(db) == 0  # refused before it ran: not even an audited dry run

    # Looking ahead is what --as-of is for: a dry run counts, deletes nothing.
    code, out = await asyncio.to_thread(purge, owner_url, "--dry-run", "--as-of", LATER, "--json")
    assert code == 0, out
    assert (json.loads(out)["due"], json.loads(out)["deleted"]) == (3, 0)
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 3

    # As of now or earlier, nothing changes: no flag needed.
    earlier = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    for args in (("--as-of", earlier), ()):
        code, out = await asyncio.to_thread(purge, owner_url, *args, "--json")
        assert (code, json.loads(out)["deleted"]) == (0, 0), out

    # Said on purpose, it deletes what the later date makes due.
    code, out = await asyncio.to_thread(
        purge, owner_url, "--allow-future", "--as-of", LATER, "--json"
    )
    assert code == 0, out
    assert json.loads(out)["deleted"] == 3
    assert await db.fetchval("SELECT count(*) FROM consent_events") == 0
    assert await purge_runs(db) == 4  # the dry run, the two as of now or earlier, this one


async def test_the_refusal_comes_before_any_connection(server_url: str) -> None:
    """A usage error: the database is not needed to say so (here it does not even exist)."""
    absent = database_url(server_url, f"consent_absent_{uuid.uuid4().hex[:10]}")
    code, out = await asyncio.to_thread(purge, absent, "--as-of", LATER)
    assert code == 2, out
    assert "is later than now" in out

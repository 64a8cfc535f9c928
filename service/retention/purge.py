"""Retention: delete the events past their property's retention (docs/retention.md).

The rules live in the database (migration 0013: `consent_retention_due`), and so does the purge
(`consent_retention_purge`): one at a time, through the erasure path (the ledger keeps each
deleted event's leaf in a tombstone naming the purge's audit row), with one `dsr_audit` row per
run. Both are the table owner's: `consent-service retention purge` connects as the owner, like
`migrate`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

PURGE = text("SELECT consent_retention_purge(:as_of, :audit_id, :actor, :dry_run)")


async def purge(
    engine: AsyncEngine, *, as_of: datetime, actor: str, dry_run: bool = False
) -> dict[str, Any]:
    """Delete (or, dry, count) what is past retention as of `as_of`; the run's summary:
    `audit_id`, `as_of`, `dry_run`, `due`, `deleted`, `by_property` (rule → count)."""
    async with engine.begin() as connection:
        found = await connection.scalar(
            PURGE,
            {"as_of": as_of, "audit_id": uuid.uuid4(), "actor": actor, "dry_run": dry_run},
        )
    summary: dict[str, Any] = found if isinstance(found, dict) else orjson.loads(found)
    return summary

"""Retention: delete the events past their property's retention (docs/retention.md).

The rules live in the database (migration 0013: `consent_retention_due`), and so does the purge
(`consent_retention_purge`): one at a time, through the erasure path (the ledger keeps each
deleted event's leaf in a tombstone naming the purge's audit row), with one `dsr_audit` row per
run. Both are the table owner's: `consent-service retention purge` connects as the owner, like
`migrate`. The service's role may only purge what is due now (`consent_retention_purge_due`),
which `serve` does every CONSENT_RETENTION_PURGE_HOURS when set, then refreshes the gauge of
events outside the monthly partitions (ledger/partitions.py).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.core.logging import get_logger
from service.ledger.partitions import refresh_outside

log = get_logger("service.retention.purge")

PURGE = text("SELECT consent_retention_purge(:as_of, :audit_id, :actor, :dry_run)")
# What `serve` may do (CONSENT_RETENTION_PURGE_HOURS): purge what is due now, never earlier; NULL
# when another purge is running.
PURGE_DUE = text("SELECT consent_retention_purge_due(:audit_id)")


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
    return _summary(found)


async def purge_due(engine: AsyncEngine) -> dict[str, Any] | None:
    """The scheduled purge, as the service's own role: what is due now; None if another purge
    (another worker or replica) holds the lock."""
    async with engine.begin() as connection:
        found = await connection.scalar(PURGE_DUE, {"audit_id": uuid.uuid4()})
    if found is None:
        return None
    summary = _summary(found)
    log.info("retention_purged", deleted=summary["deleted"], audit_id=summary["audit_id"])
    # It may have emptied the default partition: the gauge says so now, not at the next check.
    await refresh_outside(engine)
    return summary


def _summary(found: Any) -> dict[str, Any]:
    summary: dict[str, Any] = found if isinstance(found, dict) else orjson.loads(found)
    return summary

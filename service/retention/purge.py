"""Retention: delete the events past their property's retention (docs/retention.md).

The rules live in the database (migration 0013: `consent_retention_due`), and so does the purge
(`consent_retention_purge`): one at a time, through the erasure path (the ledger keeps each
deleted event's leaf in a tombstone naming the purge's audit row), with one `dsr_audit` row per
run. Both are the table owner's: `consent-service retention purge` connects as the owner, like
`migrate`. The service's role may only purge what is due now (`consent_retention_purge_due`),
which `serve` does once CONSENT_RETENTION_PURGE_HOURS have passed since the last purge, then
refreshes the gauge of events outside the monthly partitions (ledger/partitions.py).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
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


# When the last purge ran, any worker's, replica's or the CLI's (a dry run deletes nothing), and
# the database's now: the schedule is the audit trail's, not a timer in a worker's memory.
# (Newest first by the primary key: it stops at the last purge, not reading the whole trail.)
LAST_PURGE = text(
    "SELECT now() - created_at FROM dsr_audit"
    " WHERE action = 'retention-purge' AND mode IS NOT NULL ORDER BY seq DESC LIMIT 1"
)
# How often a worker looks whether a purge is due (and once at start).
CHECK_SECONDS = 300.0


async def purge_when_due(engine: AsyncEngine, every: timedelta) -> dict[str, Any] | None:
    """`purge_due` when no purge ran in the last `every`; None otherwise. Timed from the last
    audited purge: a timer of each worker's own started from zero at each start, so a service
    restarted more often than `every` never purged, and N workers purged N times an interval."""
    async with engine.connect() as connection:
        since: timedelta | None = await connection.scalar(LAST_PURGE)
    if since is not None and since < every:
        return None
    return await purge_due(engine)


def _summary(found: Any) -> dict[str, Any]:
    summary: dict[str, Any] = found if isinstance(found, dict) else orjson.loads(found)
    return summary

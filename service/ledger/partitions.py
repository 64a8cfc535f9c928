"""The event table's monthly partitions, made ahead (migrations 0014 and 0023, docs/retention.md
"Partitions").

`serve` asks the database every minute, and once at start, for this month's partition and the
next three (`consent_events_months_ahead`, the owner's function the service's role may call), so
an insert never lands outside a month. One that does (a clock far off, partitions not made for
months) lands in `consent_events_default`: `consent_events_outside_partitions` counts those rows,
and an alert fires on any (deploy/monitoring/alerts.yml). A month that cannot be made (a row of it
in the default partition) is logged and the others are made; if the call fails, the gauge is set
from `consent_events_outside()` all the same. A scheduled purge refreshes the gauge too.
"""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import Gauge
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.core.logging import get_logger

log = get_logger("service.ledger.partitions")

OUTSIDE = Gauge(
    "consent_events_outside_partitions",
    "Events in the default partition: recorded outside every monthly partition.",
    multiprocess_mode="livemax",
)

MONTHS_AHEAD = text("SELECT consent_events_months_ahead()")
COUNT_OUTSIDE = text("SELECT consent_events_outside()")
# How often `serve` checks (core/periodic.py): cheap when every month exists (a look-up per month
# and a count of the default partition), so the gauge is at most this old.
INTERVAL_SECONDS = 60.0

_reported: dict[str, Any] = {}  # what this process last logged, to log each change once


async def months_ahead(engine: AsyncEngine) -> dict[str, Any]:
    """Make the partitions missing for this month and the next three; `made`, `outside` and
    `missing` (the months of that window that could not be made), or, if the call failed,
    `error` (the database's message) with `outside` counted apart."""
    try:
        async with engine.begin() as connection:
            found = await connection.scalar(MONTHS_AHEAD)
    except DBAPIError as exc:
        # The database's own message (a lock not had in 2 s, ...); the gauge stays current.
        message = str(exc.orig)
        log.warning("event_partitions_failed", error=type(exc.orig).__name__, message=message)
        return {"made": 0, "outside": await refresh_outside(engine), "error": message}
    summary: dict[str, Any] = found if isinstance(found, dict) else orjson.loads(found)
    OUTSIDE.set(summary["outside"])
    if summary["made"]:
        log.info("event_partitions_made", made=summary["made"])
    # Each change is logged once (the check runs every minute; the alert says it meanwhile).
    outside, missing = summary["outside"], summary.get("missing", [])
    if outside and outside != _reported.get("outside"):
        log.warning("events_outside_partitions", rows=outside)
    if missing and missing != _reported.get("missing"):
        log.warning("event_months_missing", months=missing)
    _reported.update(outside=outside, missing=missing)
    return summary


async def refresh_outside(engine: AsyncEngine) -> int:
    """Set the gauge from the default partition's row count (docs/retention.md, "Partitions")."""
    async with engine.connect() as connection:
        outside = int(await connection.scalar(COUNT_OUTSIDE) or 0)
    OUTSIDE.set(outside)
    return outside

"""The event table's monthly partitions, made ahead (migration 0014, docs/retention.md
"Partitions").

`serve` asks the database every hour, and once at start, for this month's partition and the
next three (`consent_events_months_ahead`, the owner's function the service's role may call), so
an insert never lands outside a month. One that does (a clock far off, partitions not made for
months) lands in `consent_events_default`: `consent_events_outside_partitions` counts those rows,
and an alert fires on any (deploy/monitoring/alerts.yml).
"""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.core.logging import get_logger

log = get_logger("service.ledger.partitions")

OUTSIDE = Gauge(
    "consent_events_outside_partitions",
    "Events in the default partition: recorded outside every monthly partition.",
    multiprocess_mode="livemax",
)

MONTHS_AHEAD = text("SELECT consent_events_months_ahead()")
# How often `serve` checks (core/periodic.py); three months are made ahead.
INTERVAL_SECONDS = 3600.0


async def months_ahead(engine: AsyncEngine) -> dict[str, Any]:
    """Make the partitions missing for this month and the next three; `made` and `outside`."""
    async with engine.begin() as connection:
        found = await connection.scalar(MONTHS_AHEAD)
    summary: dict[str, Any] = found if isinstance(found, dict) else orjson.loads(found)
    OUTSIDE.set(summary["outside"])
    if summary["made"]:
        log.info("event_partitions_made", made=summary["made"])
    if summary["outside"]:
        log.warning("events_outside_partitions", rows=summary["outside"])
    return summary

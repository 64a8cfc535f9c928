"""Statistics: exact counts per UTC day and schema version (docs/stats.md).

Whole hours come from `consent_stats_hourly`, which the database keeps equal to a COUNT over the
stored events (statement triggers of migration 0009 add every insert and subtract every delete in
the same transaction), grouped by the events' effective choices as a whole; the counts per
category are summed here. A range that starts or ends inside an hour counts that part of the hour
from the events themselves (a BRIN index on `recorded_at` keeps it to those pages).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.consent_schema.service import SchemaCatalog
from service.stats.bodies import (
    DECISION_TYPES,
    EVENT_TYPES,
    CategoryCounts,
    SignalCounts,
    StatsItem,
)


@dataclass(slots=True)
class Tally:
    """The counts of one (day, schema version, event type)."""

    events: int = 0
    gpc: int = 0
    dnt: int = 0
    granted: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    denied: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, events: int, gpc: int, dnt: int, effective: dict[str, bool]) -> None:
        self.events += events
        self.gpc += gpc
        self.dnt += dnt
        for key, on in effective.items():
            (self.granted if on else self.denied)[key] += events


Key = tuple[date, int, str]

# Summed over hours and shards by the database; per category by the reader, from each map.
WHOLE_HOURS = text(
    """
    SELECT (hour AT TIME ZONE 'UTC')::date AS day, schema_version, event_type, effective,
           sum(events) AS events, sum(gpc) AS gpc, sum(dnt) AS dnt
    FROM consent_stats_hourly
    WHERE property = :property AND hour >= :first AND hour < :end
    GROUP BY 1, 2, 3, 4
    """
)

# The same counts as the triggers keep, over the events of a part of an hour.
PART_OF_HOURS = text(
    """
    SELECT (recorded_at AT TIME ZONE 'UTC')::date AS day, schema_version, event_type, effective,
           count(*) AS events, count(*) FILTER (WHERE gpc) AS gpc,
           count(*) FILTER (WHERE dnt) AS dnt
    FROM consent_events
    WHERE property = :property AND recorded_at >= :since AND recorded_at < :until
    GROUP BY 1, 2, 3, 4
    """
)


HOUR = timedelta(hours=1)


def _hour_start(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def split(
    since: datetime, until: datetime
) -> tuple[tuple[datetime, datetime] | None, list[tuple[datetime, datetime]]]:
    """The whole UTC hours in [since, until) as [first, end), and the parts of hours around
    them."""
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    first = since if since == _hour_start(since) else _hour_start(since) + HOUR
    end = _hour_start(until)
    if first >= end:  # no whole hour: at most the parts of one or two hours
        return None, [(since, until)]
    parts = []
    if since < first:
        parts.append((since, first))
    if end < until:
        parts.append((end, until))
    return (first, end), parts


async def tallies(
    session: AsyncSession, property_name: str, since: datetime, until: datetime
) -> dict[Key, Tally]:
    whole, parts = split(since, until)
    found: dict[Key, Tally] = defaultdict(Tally)
    rows: list[Any] = []
    if whole is not None:
        rows += (
            await session.execute(
                WHOLE_HOURS, {"property": property_name, "first": whole[0], "end": whole[1]}
            )
        ).all()
    for start, stop in parts:
        rows += (
            await session.execute(
                PART_OF_HOURS, {"property": property_name, "since": start, "until": stop}
            )
        ).all()
    for row in rows:
        found[(row.day, row.schema_version, row.event_type)].add(
            int(row.events), int(row.gpc), int(row.dnt), row.effective
        )
    return found


async def daily_stats(
    session: AsyncSession,
    catalog: SchemaCatalog,
    property_name: str,
    since: datetime,
    until: datetime,
) -> list[StatsItem]:
    """One item per (day, schema version) with events, in that order."""
    by_item: dict[tuple[date, int], dict[str, Tally]] = defaultdict(dict)
    for (day, version, event_type), tally in (
        await tallies(session, property_name, since, until)
    ).items():
        if tally.events:  # (a day whose events were all erased keeps zero rows)
            by_item[(day, version)][event_type] = tally
    items = []
    for (day, version), per_type in sorted(by_item.items()):
        optional = sorted((await catalog.version(property_name, version)).optional)
        decisions = [per_type[t] for t in DECISION_TYPES if t in per_type]
        items.append(
            StatsItem(
                day=day,
                schema_version=version,
                events={t: per_type[t].events if t in per_type else 0 for t in EVENT_TYPES},
                decisions=sum(t.events for t in decisions),
                categories={
                    key: CategoryCounts(
                        granted=sum(t.granted.get(key, 0) for t in decisions),
                        denied=sum(t.denied.get(key, 0) for t in decisions),
                    )
                    for key in optional
                },
                signals=SignalCounts(
                    gpc=sum(t.gpc for t in per_type.values()),
                    dnt=sum(t.dnt for t in per_type.values()),
                ),
            )
        )
    return items

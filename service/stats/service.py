"""Statistics: exact counts per UTC day and schema version (docs/stats.md).

Whole UTC days come from `consent_stats_daily`, whole hours of the days a range starts or ends in
from `consent_stats_hourly`, grouped by the events' effective choices as a whole; the counts per
category are summed here. Both tables hold the events up to a `seq` watermark: a rollup adds
events to them off the write path, a trigger subtracts deleted ones (migrations 0009 and 0010).
What is left is counted from the events themselves: parts of an hour at either end (a BRIN index
on `recorded_at` keeps it to those pages) and the tail above the watermark (the primary key).
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

# The events a range's counts come from, read in one statement (one snapshot): the tables hold
# the events up to `rolled` (docs/stats.md, "Rollup"), the events above it are counted directly.
# Every part is summed over shards (and hours) by the database, per category by the reader.
ROLLED = "(SELECT rolled FROM consent_stats_rollup)"
DAYS = """
    SELECT day, schema_version, event_type, effective, sum(events) AS events, sum(gpc) AS gpc,
           sum(dnt) AS dnt
    FROM consent_stats_daily
    WHERE property = :property AND day >= :since_{n} AND day < :until_{n}
    GROUP BY 1, 2, 3, 4
"""
HOURS = """
    SELECT (hour AT TIME ZONE 'UTC')::date AS day, schema_version, event_type, effective,
           sum(events) AS events, sum(gpc) AS gpc, sum(dnt) AS dnt
    FROM consent_stats_hourly
    WHERE property = :property AND hour >= :since_{n} AND hour < :until_{n}
    GROUP BY 1, 2, 3, 4
"""
# What the rollup counts, over the events of a part of an hour (a BRIN index on recorded_at).
EVENTS = """
    SELECT (recorded_at AT TIME ZONE 'UTC')::date AS day, schema_version, event_type, effective,
           count(*) AS events, count(*) FILTER (WHERE gpc) AS gpc,
           count(*) FILTER (WHERE dnt) AS dnt
    FROM consent_events
    WHERE property = :property AND recorded_at >= :since_{n} AND recorded_at < :until_{n}
      AND {which}
    GROUP BY 1, 2, 3, 4
"""
# `seq > :above` is what lets the planner use the primary key for the tail: `rolled` read before
# the statement, a lower bound of the `rolled` it reads itself (only ever moves up).
ROLLED_UP = f"seq <= {ROLLED}"
TAIL = f"seq > :above AND seq > {ROLLED}"

Span = tuple[datetime, datetime]


def _whole(since: datetime, until: datetime, unit: timedelta) -> tuple[Span | None, list[Span]]:
    """The whole units (UTC days or hours) in [since, until), and the parts around them."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    first = epoch + -((epoch - since) // unit) * unit  # the first boundary at or after since
    end = epoch + ((until - epoch) // unit) * unit  # the last boundary at or before until
    if first >= end:
        return None, [(since, until)]
    return (first, end), [part for part in ((since, first), (end, until)) if part[0] < part[1]]


def levels(since: datetime, until: datetime) -> tuple[list[Span], list[Span], list[Span]]:
    """[since, until) as whole UTC days, whole hours in what is left, and the rest."""
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    days, rest = _whole(since, until, timedelta(days=1))
    hours: list[Span] = []
    raw: list[Span] = []
    for start, stop in rest:
        whole_hours, parts = _whole(start, stop, timedelta(hours=1))
        hours += [whole_hours] if whole_hours else []
        raw += parts
    return ([days] if days else []), hours, raw


def statement(since: datetime, until: datetime) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters of `tallies` for [since, until), as one statement."""
    days, hours, raw = levels(since, until)
    parts: list[str] = []
    bounds: dict[str, Any] = {}
    for template, spans, which in (
        (DAYS, [(a.date(), b.date()) for a, b in days], ""),
        (HOURS, hours, ""),
        (EVENTS, raw, ROLLED_UP),
        (EVENTS, [(since, until)], TAIL),
    ):
        for start, stop in spans:
            n = len(parts)
            parts.append(template.format(n=n, which=which))
            bounds |= {f"since_{n}": start, f"until_{n}": stop}
    return "UNION ALL".join(parts), bounds


async def tallies(
    session: AsyncSession, property_name: str, since: datetime, until: datetime
) -> dict[Key, Tally]:
    above = (await session.execute(text(f"SELECT {ROLLED}"))).scalar_one()
    sql, bounds = statement(since, until)
    rows = await session.execute(text(sql), {"property": property_name, "above": above, **bounds})
    found: dict[Key, Tally] = defaultdict(Tally)
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

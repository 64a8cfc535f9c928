"""The rollup: adds new events to the statistics tables, off the write path (docs/stats.md).

Every few seconds each worker seals (the database finds a `seq` below which no event can still
appear) and then adds the sealed events to the tables in chunks. Both are functions of migration
0010 that run as the owner. Two workers never roll up at once (the rollup row is locked). A seal
that would have to wait for a long insert gives up after 50 ms, and one that would wait for a
VACUUM gives up at once; either is tried again next time. A
rollup that falls behind only makes reads count more events directly: never a wrong count.
"""

from __future__ import annotations

from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

ROLLED_UP = Counter(
    "consent_stats_rolled_up_seq",
    "Event sequence numbers the rollup has covered (events, and the gaps left by inserts that "
    "were rolled back or skipped as duplicates).",
)
SEAL_SKIPPED = Counter(
    "consent_stats_seal_skipped",
    "Seals given up: an insert held consent_events for over 50 ms, or maintenance (VACUUM, "
    "ANALYZE, an index build) held it.",
)

# Rows a rollup transaction adds at most: a few hundred milliseconds of work, not minutes.
CHUNK = 50_000
LOCK_NOT_AVAILABLE = "55P03"


def _sqlstate(exc: DBAPIError) -> str:
    return str(getattr(exc.orig, "sqlstate", "") or "")


async def seal(engine: AsyncEngine) -> bool:
    """Move the seal up to the events stored now; False if it had to give up waiting."""
    try:
        async with engine.begin() as connection:
            sealed = (await connection.execute(text("SELECT consent_stats_seal()"))).scalar()
    except DBAPIError as exc:
        if _sqlstate(exc) != LOCK_NOT_AVAILABLE:
            raise
        sealed = None
    if sealed is None:  # it gave up waiting, or maintenance holds the table
        SEAL_SKIPPED.inc()
        return False
    return True


async def roll_up(engine: AsyncEngine, *, chunk: int = CHUNK) -> int:
    """Add every sealed event to the tables; the number of `seq` values covered."""
    total = 0
    while True:
        async with engine.begin() as connection:
            covered = (
                await connection.execute(text("SELECT consent_stats_rollup(:n)"), {"n": chunk})
            ).scalar_one()
        if not covered:
            return total
        total += covered
        ROLLED_UP.inc(covered)


async def seal_and_roll_up(engine: AsyncEngine) -> int:
    await seal(engine)
    return await roll_up(engine)

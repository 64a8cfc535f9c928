"""The statistics API: what a property's banner decided, per day, exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from service.auth.dependencies import StatsReader, private
from service.consent_schema.bodies import PropertyName
from service.consent_schema.service import property_exists
from service.core.errors import NotFound, Unprocessable, problem_responses
from service.core.json_input import StrictJSONRoute
from service.core.times import Timestamp, iso
from service.state import Catalog, Session
from service.stats.bodies import StatsPage
from service.stats.service import daily_stats

router = APIRouter(
    tags=["statistics"], route_class=StrictJSONRoute, dependencies=[Depends(private)]
)

# Ten years of days: enough for any chart, and a bound on the work of one request.
MAX_RANGE = timedelta(days=3660)
# Whole days on either side stay representable (Python and PostgreSQL stop at years 1 and 9999).
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, tzinfo=UTC)


def range_problem(since: datetime, until: datetime) -> tuple[str, str] | None:
    """What is wrong with [since, until), and the parameter it is wrong in; or None."""
    first, last = (iso(moment) for moment in (EARLIEST, LATEST))
    start, end = _utc(since), _utc(until)
    if start is None or not EARLIEST <= start < LATEST:
        return "since", f"since must be at or after {first} and before {last}"
    if end is None or not EARLIEST < end <= LATEST:
        return "until", f"until must be after {first} and at or before {last}"
    if end <= start or end - start > MAX_RANGE:
        return "until", "until must be after since, and at most 3660 days after it"
    return None


def _utc(moment: datetime) -> datetime | None:
    """`moment` in UTC; None where that is year 0 or 10000 (neither Python nor PostgreSQL has
    them)."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return None


@router.get(
    "/v1/properties/{property}/stats",
    summary="Events, decisions and opt-in per category, per UTC day and schema version",
    response_model=StatsPage,
    responses=problem_responses(401, 403, 404, 422, 429, 503),
)
async def property_stats(
    property: PropertyName,
    session: Session,
    catalog: Catalog,
    principal: StatsReader,
    since: Annotated[Timestamp, Query(description="From this instant (RFC 3339), included.")],
    until: Annotated[Timestamp, Query(description="To this instant (RFC 3339), excluded.")],
) -> StatsPage:
    """Counts of the events stored now with since ≤ recorded_at < until, exact (an erasure lowers
    them), grouped by UTC day and schema version. A decision is an event of the first four types,
    whoever made it; a category's counts are over decisions, by the effective choice (GPC/DNT
    applied where the version honours them)."""
    wrong = range_problem(since, until)
    if wrong is not None:
        name, why = wrong
        pointer = f"/query/{name}"
        raise Unprocessable(
            f"{pointer}: {why}", extra={"errors": [{"pointer": pointer, "detail": why}]}
        )
    if not await property_exists(session, property):
        raise NotFound(f"there is no property named {property!r}")
    items = await daily_stats(session, catalog, property, since, until)
    return StatsPage(property=property, since=since, until=until, items=items)

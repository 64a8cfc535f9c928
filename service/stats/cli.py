"""`consent-service stats`: the statistics API's counts from a terminal."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncEngine

from service.core.cli_support import fail, load_settings, parse_moment, print_json, with_engine


def stats(
    property_name: Annotated[str, typer.Option("--property", help="The property.")],
    since: Annotated[str, typer.Option(help="From this instant (RFC 3339), included.")],
    until: Annotated[str, typer.Option(help="To this instant (RFC 3339), excluded.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON document.")] = False,
) -> None:
    """Events, decisions and opt-in per category, per UTC day and schema version (exact)."""
    from service.consent_schema.service import SchemaCatalog, property_exists
    from service.core.db import create_sessionmaker
    from service.core.errors import NotFound
    from service.stats.bodies import StatsPage
    from service.stats.routes import range_problem
    from service.stats.service import daily_stats

    settings = load_settings()
    start, end = parse_moment("--since", since), parse_moment("--until", until)
    wrong = range_problem(start, end)
    if wrong is not None:
        raise fail(wrong[1].replace("since", "--since").replace("until", "--until"), 2)

    async def work(engine: AsyncEngine) -> StatsPage:
        async with create_sessionmaker(engine)() as session:
            if not await property_exists(session, property_name):
                raise NotFound(f"there is no property named {property_name!r}")
            items = await daily_stats(session, SchemaCatalog(engine), property_name, start, end)
        return StatsPage(property=property_name, since=start, until=end, items=items)

    page = with_engine(settings, work)
    if as_json:
        print_json(page.model_dump(mode="json"))
        return
    for item in page.items:
        opt_in = ", ".join(
            f"{key} {counts.granted}/{counts.granted + counts.denied}"
            for key, counts in item.categories.items()
        )
        typer.echo(
            f"{item.day} v{item.schema_version}: {item.decisions} decision(s) "
            f"({', '.join(f'{t} {n}' for t, n in item.events.items() if n)}); "
            f"opted in: {opt_in or '-'}; gpc {item.signals.gpc}, dnt {item.signals.dnt}"
        )
    typer.echo(f"{len(page.items)} day(s) and version(s)", err=True)

"""`consent-service retention purge`: delete what is past retention (docs/retention.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.core.cli_support import fail, load_settings, parse_moment, print_json, with_engine

retention_app = typer.Typer(
    rich_markup_mode=None,
    help="Retention: delete the events past their property's retention (docs/retention.md).",
    no_args_is_help=True,
)


@retention_app.command("purge")
def retention_purge(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what is due and audit the run; delete nothing.")
    ] = False,
    as_of: Annotated[
        str | None,
        typer.Option(
            help="Apply retention as of this RFC 3339 time (default: now), e.g. to see what a "
            "later date would purge; a later time than now needs --dry-run or --allow-future."
        ),
    ] = None,
    allow_future: Annotated[
        bool,
        typer.Option(
            "--allow-future",
            help="Delete even with --as-of later than now: what is not yet due by today's date "
            "goes too.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Delete every event past its property's retention, through the erasure path (the ledger
    keeps their leaves), and write one audit row with the counts. Safe to run again and
    concurrently (one at a time). Connect as the table owner, like `migrate`."""
    from service.retention.purge import purge

    settings = load_settings()
    now = datetime.now(UTC)
    moment = parse_moment("--as-of", as_of) if as_of else now
    if moment > now and not (dry_run or allow_future):
        # One mistyped year would delete evidence that is still needed (docs/retention.md,
        # "The purge"): a later date is looked at with --dry-run, or deleted on purpose.
        raise fail(
            f"--as-of: {as_of!r} is later than now ({now.isoformat(timespec='seconds')}): a"
            " purge as of a later date deletes events that are not yet due; add --dry-run to"
            " count them, or --allow-future to delete them anyway",
            2,
        )

    async def work(engine: AsyncEngine) -> dict[str, Any]:
        try:
            return await purge(engine, as_of=moment, actor="cli", dry_run=dry_run)
        except ProgrammingError as exc:
            if "permission denied" in str(exc.orig):
                raise fail(
                    "retention purge runs as the owner of the tables (the role `migrate` uses): "
                    "the service's role may not delete evidence"
                ) from None
            raise

    summary = with_engine(settings, work)
    if as_json:
        print_json(summary)
        return
    verb = "would delete" if summary["dry_run"] else "deleted"
    count = summary["due"] if summary["dry_run"] else summary["deleted"]
    whole = summary["whole_partitions"]
    months = f", {whole} whole monthly partitions {'to drop' if summary['dry_run'] else 'dropped'}"
    typer.echo(
        f"retention as of {summary['as_of']}: {verb} {count} events"
        f"{months if whole else ''} (audit {summary['audit_id']})"
    )
    for property_name, rules in sorted(summary["by_property"].items()):
        typer.echo(
            f"  {property_name}: " + ", ".join(f"{rule} {n}" for rule, n in sorted(rules.items()))
        )

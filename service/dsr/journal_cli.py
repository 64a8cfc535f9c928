"""`consent-service backup`: the DSR journal a restore needs, and its re-application
(docs/backup.md)."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import sqlalchemy.exc
import typer
from sqlalchemy.ext.asyncio import AsyncEngine

from service.core.cli_support import (
    CLI_ACTOR,
    fail,
    load_settings,
    parse_moment,
    print_json,
    with_engine,
    writing_to,
)
from service.core.errors import ConsentServiceError, Forbidden
from service.core.hashing import hasher_from_settings
from service.dsr.cli import opened_output

backup_app = typer.Typer(
    rich_markup_mode=None,  # plain help: no boxes, no <bool> placeholders on flags
    help="Backups: export the DSR journal; re-apply it to a restored database (docs/backup.md).",
    no_args_is_help=True,
)


@backup_app.command("journal")
def backup_journal(
    since: Annotated[
        str | None, typer.Option(help="Only audit rows from this time on (RFC 3339).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here (mode 0600), not stdout.")
    ] = None,
) -> None:
    """Write the DSR journal: every audit row, oldest first, each erasure with its tokens (keyed
    hashes of what it matched), as JSON lines. Keep it apart from the database (with the
    backups): a restore re-applies it."""
    from service.core.db import create_sessionmaker
    from service.dsr.journal import journal_lines

    settings = load_settings()
    start = parse_moment("--since", since) if since else None

    async def work(engine: AsyncEngine) -> list[str]:
        async with create_sessionmaker(engine).begin() as session:
            return await journal_lines(session, since=start)

    with opened_output(output) as sink:  # before the database: a path it cannot write fails first
        lines = with_engine(settings, work)
        with writing_to(output):
            sink.write("".join(f"{line}\n" for line in lines).encode())
    where = f" to {output}" if output else ""
    typer.echo(f"wrote {len(lines)} audit row(s){where}", err=True)


@backup_app.command("reapply")
def backup_reapply(
    journals: Annotated[
        list[Path],
        typer.Argument(metavar="FILE", help="Journal files written by `backup journal`."),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what it would do; change nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """After a restore: apply every erasure the journals record that this database does not know
    (its events are deleted or anonymised again), and put back every missing audit row. Run it
    as the role that migrates (the tables' owner), after `migrate`, before serving. Safe to
    repeat: a second run finds nothing to do."""
    from service.core.db import create_sessionmaker
    from service.dsr.journal import JournalError, MissingKey, Reapplied, read_journal, reapply

    settings = load_settings()
    hasher = hasher_from_settings(settings)
    try:
        entries = read_journal(_lines(journals))
    except JournalError as exc:
        raise fail(str(exc)) from None

    async def work(engine: AsyncEngine) -> Reapplied:
        async with create_sessionmaker(engine)() as session, session.begin():
            try:
                done = await reapply(session, hasher, entries, actor=CLI_ACTOR)
            except sqlalchemy.exc.DBAPIError as exc:
                raise _explained(exc) from None
            except MissingKey as exc:
                raise ConsentServiceError(str(exc)) from None
            if dry_run:
                await session.rollback()
            return done

    done = with_engine(settings, work)
    if as_json:
        print_json({"dry_run": dry_run, **done.as_dict()})
        return
    prefix = "would re-apply" if dry_run else "re-applied"
    typer.echo(
        f"{prefix} {done.erasures} erasure(s) ({done.events} event(s) erased here); "
        f"{done.restored} audit row(s) {'to restore' if dry_run else 'restored'}, "
        f"{done.already_here} already here"
    )
    if done.earlier_decisions:
        typer.echo(
            f"  with them every other event of {done.earlier_decisions} consent id(s) whose "
            "latest decision here they erased, as erasures of their own: kept, an earlier "
            "decision would be the state again (docs/guarantees.md)"
        )
    for reference in done.untokened:
        typer.echo(
            f"  erasure {reference}: made before erasures kept tokens (migration 0008), not "
            "re-applied: erase it again (consent-service dsr erase)"
        )
    for reference in done.withdrawals:
        typer.echo(
            f"  withdrawal {reference}: recorded after the backup, its events are not in this "
            "copy: enter it again under the same reference, identifier and property "
            f"(consent-service dsr withdraw --reference {shlex.quote(reference)} ...): it is "
            "recorded again (docs/backup.md)"
        )


def _lines(paths: list[Path]) -> Iterator[tuple[str, int, str]]:
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(f"cannot read {path}: {exc}") from None
        for number, line in enumerate(text.splitlines(), start=1):
            yield str(path), number, line


def _explained(exc: sqlalchemy.exc.DBAPIError) -> Exception:
    """The two mistakes a restore can make, said plainly; anything else as it is."""
    state = getattr(exc.orig, "sqlstate", None)
    if state == "42501":  # insufficient_privilege
        return Forbidden(
            "this role may not re-apply erasures or put back audit rows: connect as the role "
            "that migrates (the tables' owner) in CONSENT_DATABASE_URL"
        )
    if state == "42883":  # undefined_function
        return ConsentServiceError(
            "this database predates the erasure journal: run `consent-service migrate` first"
        )
    return exc

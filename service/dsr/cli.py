"""`consent-service dsr`: the DSR API's look-ups, exports and erasures from a terminal, with the
same rules and the same audit (actor `cli`)."""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, BinaryIO

import typer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from service.core.cli_support import (
    CLI_ACTOR,
    fail,
    load_settings,
    parse_options,
    print_json,
    with_engine,
    with_session,
    writing_to,
)
from service.core.hashing import hasher_from_settings

dsr_app = typer.Typer(
    rich_markup_mode=None,  # plain help: no boxes, no <bool> placeholders on flags
    help="Data-subject requests: history, export, erasure (audited, actor 'cli').",
    no_args_is_help=True,
)


def from_stdin(value: str | None) -> str | None:
    """`-` for an identifier: its value is the first line of standard input, so it stays out of
    `ps`, /proc and the shell's history (a command line is visible to every user of the host)."""
    if value != "-":
        return value
    return sys.stdin.readline().removesuffix("\n").removesuffix("\r")


STDIN = " `-`: read it from the first line of standard input (out of `ps` and shell history)."
SubjectOption = Annotated[
    str | None,
    typer.Option(
        "--subject-id",
        help="The id in the person's consent cookie (lowercase 8-4-4-4-12, as the banner writes "
        "it)." + STDIN,
        callback=from_stdin,
    ),
]
IpOption = Annotated[
    str | None,
    typer.Option("--ip", help="An IP address (any key matches)." + STDIN, callback=from_stdin),
]
UserOption = Annotated[
    str | None, typer.Option("--user-id", help="An account id." + STDIN, callback=from_stdin)
]
PropertyOption = Annotated[str | None, typer.Option("--property", help="Only this property.")]
SinceOption = Annotated[str | None, typer.Option(help="From this time on (RFC 3339).")]
UntilOption = Annotated[str | None, typer.Option(help="Before this time (RFC 3339).")]


@dsr_app.command("history")
def dsr_history(
    subject_id: SubjectOption = None,
    ip: IpOption = None,
    user_id: UserOption = None,
    property_name: PropertyOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
) -> None:
    """Print every matching event, oldest first, one JSON record per line."""
    from service.consent_schema.service import SchemaCatalog
    from service.core.db import create_sessionmaker
    from service.dsr.bodies import DsrAction, DsrQuery
    from service.dsr.service import history_page, known_property, record_audit

    settings = load_settings()
    query = parse_options(
        DsrQuery, subject_id=subject_id, ip=ip, user_id=user_id,
        property=property_name, since=since, until=until,
    )  # fmt: skip
    hasher = hasher_from_settings(settings)

    async def work(engine: AsyncEngine) -> int:
        catalog = SchemaCatalog(engine)
        async with create_sessionmaker(engine).begin() as session:
            await known_property(session, query.property)
            cursor: str | None = None
            total = 0
            while True:
                items, cursor = await history_page(
                    session, catalog, hasher, query, limit=1000, cursor=cursor
                )
                for item in items:
                    typer.echo(item.model_dump_json())
                total += len(items)
                if cursor is None:
                    break
            await record_audit(
                session, action=DsrAction.HISTORY, actor=CLI_ACTOR, query=query, hasher=hasher,
                matched=total,
            )  # fmt: skip
        return total

    total = with_engine(settings, work)
    typer.echo(f"{total} event(s)", err=True)


@dsr_app.command("export")
def dsr_export(
    subject_id: SubjectOption = None,
    ip: IpOption = None,
    user_id: UserOption = None,
    property_name: PropertyOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    export_format: Annotated[
        str, typer.Option("--format", help="json, csv or dpv (JSON-LD).")
    ] = "json",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Export the complete history (JSON evidence, CSV, or DPV consent records in JSON-LD), with
    a progress bar for files."""
    from service.consent_schema.service import SchemaCatalog
    from service.core.db import create_sessionmaker
    from service.dsr.bodies import DsrAction, ExportRequest
    from service.dsr.export import open_export
    from service.dsr.service import count_export, known_property, record_audit
    from service.ledger.receipts import receipt_signer_from_settings

    settings = load_settings()
    request = parse_options(
        ExportRequest, subject_id=subject_id, ip=ip, user_id=user_id, property=property_name,
        since=since, until=until, format=export_format,
    )  # fmt: skip
    hasher = hasher_from_settings(settings)

    async def work(engine: AsyncEngine, sink: BinaryIO) -> int:
        async with create_sessionmaker(engine).begin() as session:
            await known_property(session, request.property)
            count, _ = await count_export(session, hasher, request)
            audit_id = await record_audit(
                session, action=DsrAction.EXPORT, actor=CLI_ACTOR, query=request, hasher=hasher,
                matched=count,
            )  # fmt: skip
        progress: list[Callable[[int], None]] = []
        plan, stream = await open_export(
            engine, SchemaCatalog(engine), hasher, request, audit_id=audit_id,
            export_format=request.format, exported_at=datetime.now(UTC), request_id=None,
            progress=lambda done: progress[0](done),
            receipts=receipt_signer_from_settings(settings),
        )  # fmt: skip
        with typer.progressbar(
            length=plan.count, label="exporting", file=sys.stderr, hidden=output is None
        ) as bar:
            progress.append(bar.update)
            async for data in stream:
                with writing_to(output):
                    sink.write(data)
        return plan.count

    # The file first: a path it cannot write fails before the look-up is made and audited.
    with opened_output(output) as sink:
        count = with_engine(settings, lambda engine: work(engine, sink))
    where = f" to {output}" if output else ""
    typer.echo(f"exported {count} event(s){where}", err=True)


@dsr_app.command("erase")
def dsr_erase(
    subject_id: SubjectOption = None,
    ip: IpOption = None,
    user_id: UserOption = None,
    property_name: PropertyOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    mode: Annotated[str, typer.Option(help="delete (default) or anonymise.")] = "delete",
    reference: Annotated[str | None, typer.Option(help="The DSR ticket.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Erase without asking.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be erased; change nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Erase everything matching (delete, or anonymise: keep rows, clear identifying columns), in
    one transaction with its audit row. Shows how many events match and asks first."""
    from service.dsr.bodies import DsrAction, ErasureRequest, ErasureResult
    from service.dsr.erasure import decisions_left_behind, erase_in_one_transaction
    from service.dsr.service import count_matching, known_property, record_audit

    settings = load_settings()
    request = parse_options(
        ErasureRequest, subject_id=subject_id, ip=ip, user_id=user_id, property=property_name,
        since=since, until=until, mode=mode, reference=reference,
    )  # fmt: skip
    hasher = hasher_from_settings(settings)

    async def count(session: AsyncSession) -> tuple[int, dict[tuple[str, uuid.UUID], int]]:
        await known_property(session, request.property)
        matched = await count_matching(session, hasher, request)
        # Counting is a look-up of a person's records: audited like one.
        await record_audit(
            session, action=DsrAction.HISTORY, actor=CLI_ACTOR, query=request, hasher=hasher,
            matched=matched,
        )  # fmt: skip
        return matched, await decisions_left_behind(session, hasher, request)

    matched, left_behind = with_session(settings, count)
    # Consent ids whose latest decision this matches: their other events go too (`erase`), and
    # are counted in `matched`, as the erasure's own answer counts them.
    earlier = sum(left_behind.values())
    also = (
        f" ({earlier} of them every other event of {len(left_behind)} consent id(s) whose latest"
        " decision it matches)"
        if left_behind
        else ""
    )
    if dry_run:
        if as_json:
            print_json(
                {
                    "dry_run": True, "mode": request.mode.value, "matched": matched + earlier,
                    "consent_ids_with_earlier_decisions": len(left_behind),
                }
            )  # fmt: skip
        else:
            typer.echo(
                f"would {request.mode.value} {matched + earlier} event(s){also}; nothing was"
                " changed"
            )
        return
    asked = (
        f"{request.mode.value} {matched + earlier} event(s) matching this request{also}? This"
        " cannot be undone"
    )
    # Nothing to lose, nothing to ask: the erasure is still audited.
    if not yes and matched and not confirmed(asked):
        typer.echo("erasure not confirmed: nothing erased", err=True)
        raise typer.Exit(NOT_CONFIRMED)

    async def work(engine: AsyncEngine) -> ErasureResult:
        return await erase_in_one_transaction(
            engine, hasher, request, mode=request.mode, actor=CLI_ACTOR,
            reference=request.reference,
        )  # fmt: skip

    result = with_engine(settings, work)
    if as_json:
        print_json(result.model_dump(mode="json"))
    else:
        typer.echo(f"erasure {result.erasure_id}: {result.mode.value} {result.matched} event(s)")
        for erasure_id in result.earlier_decisions:
            typer.echo(f"  with erasure {erasure_id}: a consent id's earlier decisions")


@dsr_app.command("withdraw")
def dsr_withdraw(
    reference: Annotated[
        str, typer.Option(help="The DSR ticket where the request in writing is kept.")
    ],
    subject_id: SubjectOption = None,
    user_id: UserOption = None,
    property_name: PropertyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    # The other DSR commands take --ip; here it is refused with the reason, not "no such option".
    ip: Annotated[str | None, typer.Option(hidden=True)] = None,
) -> None:
    """Record a withdrawal a person sent in writing: a `withdraw` event (source dsr, actor cli)
    for every subject and property with a decision matching the identifier, with its audit row.
    Not by IP address: an address is shared. Run again with the same reference, identifier and
    property, it prints the withdrawal recorded first and records nothing; after a restore that
    lost its events, it records them again (docs/backup.md)."""
    from service.consent_schema.service import SchemaCatalog
    from service.core.db import create_sessionmaker
    from service.dsr.bodies import WithdrawalRequest, WithdrawalResult
    from service.dsr.service import known_property
    from service.dsr.withdrawal import Recorded, record_withdrawal
    from service.ledger.receipts import receipt_signer_from_settings

    if ip is not None:
        raise fail(
            "--ip: a withdrawal is recorded by --subject-id or --user-id, not by IP address: an "
            "address is shared, and a withdrawal by it would withdraw other people's consent",
            2,
        )
    settings = load_settings()
    request = parse_options(
        WithdrawalRequest, subject_id=subject_id, user_id=user_id, property=property_name,
        reference=reference,
    )  # fmt: skip
    hasher = hasher_from_settings(settings)

    async def work(engine: AsyncEngine) -> tuple[WithdrawalResult, Recorded]:
        async with create_sessionmaker(engine).begin() as session:
            await known_property(session, request.property)
            return await record_withdrawal(
                session, SchemaCatalog(engine), hasher, request, actor=CLI_ACTOR,
                now=datetime.now(UTC), receipts=receipt_signer_from_settings(settings),
            )  # fmt: skip

    result, recorded = with_engine(settings, work)
    # On stderr, so --json prints the same object either way.
    if recorded is Recorded.RETRY:  # the API's 200
        typer.echo(
            f"already recorded: reference {request.reference!r} is withdrawal "
            f"{result.withdrawal_id}; nothing was recorded again",
            err=True,
        )
        if len(result.items) < result.withdrawn:
            typer.echo(
                f"only {len(result.items)} of its {result.withdrawn} withdraw event(s) are still "
                "stored: the others were erased, or their subjects decided again since",
                err=True,
            )
    elif recorded is Recorded.REENTERED:
        typer.echo(
            f"recorded again: reference {request.reference!r} is withdrawal "
            f"{result.withdrawal_id}, whose withdraw event(s) are not in the database (a "
            "restore of an older backup loses them: docs/backup.md); the missing ones were "
            "recorded again",
            err=True,
        )
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    typer.echo(
        f"withdrawal {result.withdrawal_id}: {result.withdrawn} subject(s) and property(ies)"
    )
    for item in result.items:
        typer.echo(
            f"  {item.property} {item.subject_id}: withdraw on version {item.schema_version}"
        )


# `dsr erase` declined (an answer other than yes, end of input, Ctrl-C at the question): nothing
# was erased, and a script must not read it as done.
NOT_CONFIRMED = 1


def confirmed(question: str) -> bool:
    """Whether the person at the terminal answers yes to `question` (on stderr). End of input or
    Ctrl-C is a no, said in the command's own words rather than click's bare "Aborted!"."""
    try:
        return typer.confirm(question, err=True)
    except typer.Abort:
        typer.echo("", err=True)  # end the prompt's line
        return False


@contextlib.contextmanager
def opened_output(path: Path | None) -> Iterator[BinaryIO]:
    """`path` (created now, mode 0600) or stdout, for a command's output: opened before the
    database is touched, so a path it cannot write fails first. Flushed and closed at the end; a
    failure removes the file it created (no empty or partial output left where there was none)."""
    if path is None:
        yield sys.stdout.buffer
        with writing_to(None):
            sys.stdout.buffer.flush()
        return
    created = not os.path.lexists(path)
    sink = private_file(path)
    try:
        yield sink
        with writing_to(path):
            sink.close()
    except BaseException:
        with contextlib.suppress(OSError):
            sink.close()
        if created:
            path.unlink(missing_ok=True)
        raise


def private_file(path: Path) -> BinaryIO:
    """`path` opened for writing, readable by its owner only: an export is personal data. A path
    it cannot write is one line, `cannot write PATH: why`, exit 1."""
    with writing_to(path):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(descriptor, 0o600)  # also when the file existed with a wider mode
        except OSError:
            os.close(descriptor)
            raise
        return os.fdopen(descriptor, "wb")

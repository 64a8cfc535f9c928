"""`consent-service ledger`: verify the tamper-evident ledger; print its head (docs/evidence.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.core.cli_support import fail, load_settings, print_json, with_engine

ledger_app = typer.Typer(
    rich_markup_mode=None,
    help="The tamper-evident ledger: verify it, print its head (docs/evidence.md).",
    no_args_is_help=True,
)


# Receipts to check: stored, or named by an event (every one stored since migration 0012 names
# its batch's; with their rows deleted, only a key finds that out).
ANY_RECEIPT = text(
    "SELECT EXISTS (SELECT FROM ledger_receipts)"
    " OR EXISTS (SELECT FROM consent_events WHERE receipt IS NOT NULL)"
)


@ledger_app.command("verify")
def ledger_verify(
    since: Annotated[int, typer.Option(help="Start at this seal (0: the genesis seal).")] = 0,
    head: Annotated[
        Path | None,
        typer.Option(help="A head printed earlier by `ledger head --json`: it must still be in."),
    ] = None,
    jwks: Annotated[
        Path | None,
        typer.Option(
            help="Check receipts against this JWK Set (the service's /.well-known/jwks.json, "
            "saved) instead of the configured receipt keys: a verifier needs no private key."
        ),
    ] = None,
) -> None:
    """Recompute every leaf that can be, every seal's root and the chain of seal hashes. Exits 0,
    or 1 naming the first event or seal that does not match (`ledger broken: …`) or saying why
    it could not check (`error: …`); 2 for a negative --since."""
    from service.core.dev_keys import dev_receipt_key_path
    from service.ledger.receipts import keys_of_jwk_set, receipt_signer_from_settings
    from service.ledger.verify import LedgerBroken, NoSuchSeal, verify_ledger

    if since < 0:
        raise fail(f"--since: {since} is not a seal number (0: the genesis seal)", 2)
    settings = load_settings()
    published: dict[str, Any] | None = None
    if head is not None:
        try:
            published = json.loads(head.read_text())
            int(published["seal"]), str(published["seal_hash"])
        except OSError as exc:
            raise fail(f"{head}: {exc.strerror or exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            why = f"it has no {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
            raise fail(f"{head}: not a head written by `ledger head --json` ({why})") from None

    if jwks is not None:
        try:
            keys = keys_of_jwk_set(json.loads(jwks.read_text()))
        except OSError as exc:
            raise fail(f"--jwks: {jwks}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise fail(f"--jwks: {jwks}: {exc}") from None
    elif settings.receipt_key is None and not dev_receipt_key_path(settings).exists():
        keys = None  # made now, a key would sign nothing stored: every receipt would seem forged
    else:
        keys = receipt_signer_from_settings(settings).public_keys

    async def work(engine: AsyncEngine) -> str:
        async with engine.connect() as connection:
            if keys is None and await connection.scalar(ANY_RECEIPT):
                raise fail(
                    "no receipt key to check the stored receipts with: give --jwks FILE (the "
                    "service's /.well-known/jwks.json, saved) or set CONSENT_RECEIPT_KEY"
                )
            try:
                report = await verify_ledger(connection, since=since, head=published, keys=keys)
            except LedgerBroken as exc:
                return f"ledger broken: {exc}"
            except NoSuchSeal as exc:  # a mistaken --since, not a mismatch
                raise fail(f"--since: {exc}") from None
        return (
            f"ledger verified: seals {since} to {report.head['seal']},"
            f" {report.leaves} sealed leaves ({report.recomputed} events recomputed, of them"
            f" {report.anonymised} anonymised; {report.tombstones} erased) and"
            f" {report.unsealed} not sealed yet; {report.receipts} receipts;"
            f" {report.versions} schema versions;"
            + (
                f" {report.unlinked} tombstone(s) and {report.unlinked_anonymised} anonymised"
                " event(s) from before migrations 0012 and 0025 name no erasure;"
                if report.unlinked or report.unlinked_anonymised
                else ""
            )
            + f" head {report.head['seal_hash']}"
        )

    outcome = with_engine(settings, work)
    if outcome.startswith("ledger broken"):
        typer.echo(outcome, err=True)
        raise typer.Exit(1)
    typer.echo(outcome)


@ledger_app.command("head")
def ledger_head(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The latest seal: publish it elsewhere (a git commit, a transparency log), so a later
    `ledger verify --head FILE` proves the ledger still extends it."""
    from service.ledger.sealer import LAST_SEAL, Seal

    settings = load_settings()

    async def work(engine: AsyncEngine) -> dict[str, Any]:
        async with engine.connect() as connection:
            row = (await connection.execute(LAST_SEAL)).one()
        return Seal.from_row(row).head()

    found = with_engine(settings, work)
    if as_json:
        print_json(found)
    else:
        typer.echo(
            f"seal {found['seal']} at {found['sealed_at']}: {found['tree_size']} leaves up to seq"
            f" {found['last_seq']}, root {found['root']}, hash {found['seal_hash']}"
        )

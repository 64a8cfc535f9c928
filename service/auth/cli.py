"""`consent-service keys`: create, list and revoke API keys."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.cli_support import fail, load_settings, print_json, with_session
from service.core.errors import ConsentServiceError
from service.core.times import iso

keys_app = typer.Typer(
    rich_markup_mode=None,  # plain help: no boxes, no <bool> placeholders on flags
    help="Create, list and revoke API keys.",
    no_args_is_help=True,
)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what uses the key, e.g. 'dsr-team'.")],
    scopes: Annotated[
        str,
        typer.Option(
            help="Comma-separated: dsr:read, dsr:erase, dsr:withdraw, schemas:write, "
            "audit:read, metrics:read, stats:read.",
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Create an API key. Its secret is printed once and cannot be shown again."""
    from service.auth.service import CreatedKey, create_key, parse_key_name, parse_scopes

    settings = load_settings()
    try:
        key_name, scope_list = parse_key_name(name), parse_scopes(scopes)
    except ConsentServiceError as exc:
        raise fail(exc.detail, 2) from None

    async def work(session: AsyncSession) -> CreatedKey:
        return await create_key(session, name=key_name, scopes=scope_list)

    key = with_session(settings, work)
    if as_json:
        print_json({"id": key.id, "name": key.name, "scopes": key.scopes, "secret": key.secret})
        return
    typer.echo(f"created {key.id} ({key.name}) with scopes {', '.join(key.scopes)}")
    typer.echo(f"secret (shown once, store it now): {key.secret}")


@keys_app.command("list")
def keys_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List API keys (never their secrets)."""
    from service.auth.service import list_keys

    settings = load_settings()

    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        return [
            {
                "id": row.id,
                "name": row.name,
                "scopes": row.scopes,
                "created_at": iso(row.created_at),
                "last_used_at": iso(row.last_used_at) if row.last_used_at else None,
                "revoked_at": iso(row.revoked_at) if row.revoked_at else None,
            }
            for row in await list_keys(session)
        ]

    rows = with_session(settings, work)
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no API keys")
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        used = row["last_used_at"] or "never"
        typer.echo(
            f"{row['id']}  {row['name']}  {','.join(row['scopes'])}  {state}  last used {used}"
        )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key id, e.g. key_0123abcd...")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Revoke an API key: every later request with it gets 401. Revoking twice is harmless."""
    from service.auth.service import revoke_key

    settings = load_settings()

    async def work(session: AsyncSession) -> str:
        return iso(await revoke_key(session, key_id))

    revoked_at = with_session(settings, work)
    if as_json:
        print_json({"id": key_id, "revoked_at": revoked_at})
    else:
        typer.echo(f"revoked {key_id} at {revoked_at}")

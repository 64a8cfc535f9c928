"""What a superuser can do around the database's own guards: the attacks the ledger must catch."""

from __future__ import annotations

import asyncpg


async def as_superuser(
    db: asyncpg.Connection,
    statement: str,
    *args: object,
    tables: tuple[str, ...] = ("consent_events",),
) -> None:
    """`statement`, run with the user triggers of `tables` (append-only guards, link checks) off."""
    async with db.transaction():
        for table in tables:
            await db.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        await db.execute(statement, *args)
        for table in tables:
            await db.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")

"""Alembic environment: async engine, type comparison, and one migrator at a time."""

from __future__ import annotations

import asyncio

import asyncpg
from alembic import context
from alembic.operations import MigrationScript
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import service.tables  # noqa: F401  (registers every table on Base.metadata)
from service.core.db import Base
from service.core.db_url import sync_dsn
from service.ledger.tables import not_a_partition

config = context.config
target_metadata = Base.metadata

# Any constant works; it only has to be the same for every process that migrates this database.
MIGRATION_LOCK_ID = 0x636F6E73656E74  # "consent"


def _skip_empty_autogenerate(
    context: MigrationContext, revision: object, directives: list[MigrationScript]
) -> None:
    script = directives[0]
    autogenerate = config.cmd_opts is not None and getattr(config.cmd_opts, "autogenerate", False)
    if autogenerate and script.upgrade_ops is not None and script.upgrade_ops.is_empty():
        directives[:] = []


def _run(connection: Connection) -> None:
    # Two migrators (the compose `migrate` job and a developer, two replicas) wait for each other.
    connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    try:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
            include_name=not_a_partition,
            process_revision_directives=_skip_empty_autogenerate,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    except BaseException:
        # A failed migration leaves the transaction aborted: without this the unlock below would
        # fail too, and its error would hide the migration's own.
        connection.rollback()
        raise
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
        connection.commit()


async def _run_online() -> None:
    database_url = config.attributes.get("database_url")
    if database_url is not None:
        # The URL as the service's own engines take it (its TLS files, its servers: core/db.py,
        # sync_dsn), with no time limit on a statement (an index on a large table takes its time).
        dsn = sync_dsn(database_url)

        async def connect() -> asyncpg.Connection:
            connection: asyncpg.Connection = await asyncpg.connect(
                dsn, server_settings={"application_name": "consent-service-migrate"}, timeout=5
            )
            return connection

        engine = create_async_engine(
            "postgresql+asyncpg://", poolclass=NullPool, async_creator=connect
        )
    else:
        engine = create_async_engine(
            config.get_main_option("sqlalchemy.url") or "", poolclass=NullPool
        )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())

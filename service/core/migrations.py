"""Alembic, driven from code: the CLI, the app's readiness check and the tests share this."""

from __future__ import annotations

import functools
import re

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.core.db_url import async_url
from service.core.resources import MIGRATIONS_DIR


def alembic_config(database_url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    if database_url is not None:
        rendered = async_url(database_url).render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
        # What alembic/env.py connects with: the URL as the service's own engines take it.
        config.attributes["database_url"] = database_url
    return config


class NewerThanRelease(Exception):
    """The database was migrated by a newer release than this one."""


def upgrade_to_head(database_url: str) -> None:
    """Migrate the database to the newest revision (blocking: call from a thread in async code).
    NewerThanRelease when it is at a revision this release does not know (alembic's own error
    is a traceback that says only that it cannot locate it)."""
    try:
        command.upgrade(alembic_config(database_url), "head")
    except CommandError as exc:
        found = re.search(r"Can't locate revision identified by '([^']+)'", str(exc))
        if found is None or not newer_than_release(found.group(1)):
            raise
        raise NewerThanRelease(
            f"the database is at revision {found.group(1)}, which a newer release made; this "
            f"release knows revisions up to {head_revision()}: run the newer release's "
            "`migrate` and `serve`, or restore a backup from before that release"
        ) from None


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def newer_than_release(revision: str | None) -> bool:
    """Whether `revision` is one a later release of this service made: not one of this release's,
    and numbered after its head (revisions are numbered 0001, 0002, …). Anything else unknown (a
    stray stamp, another application's database) is not."""
    head = head_revision()
    return (
        revision is not None
        and revision not in known_revisions()
        and revision.isdigit()
        and head is not None
        and int(revision) > int(head)
    )


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every revision this release's migrations make."""
    return frozenset(
        script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    )


async def current_revision(connection: AsyncConnection) -> str | None:
    """The database's revision; None when it was never migrated (no alembic_version table)."""
    if await connection.scalar(text("SELECT to_regclass('alembic_version')")) is None:
        return None
    result = await connection.execute(text("SELECT version_num FROM alembic_version"))
    return result.scalar_one_or_none()

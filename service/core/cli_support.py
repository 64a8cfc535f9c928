"""What every CLI command shares: settings, a database session, failures as exit codes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from service.core.config import Settings
from service.core.embedded import database_url
from service.core.errors import ConsentServiceError

T = TypeVar("T")
Q = TypeVar("Q", bound=BaseModel)
CLI_ACTOR = "cli"  # the actor recorded for CLI actions (schema publishes, DSR audit rows)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            name = f"CONSENT_{field.upper()}" if field else "configuration"
            typer.echo(f"error: {name}: {error['msg']}", err=True)
        raise typer.Exit(2) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one transaction: committed if it returns, rolled back if it raises."""
    from service.core.db import create_sessionmaker

    async def in_transaction(engine: AsyncEngine) -> T:
        async with create_sessionmaker(engine).begin() as session:
            return await work(session)

    return with_engine(settings, in_transaction)


def with_engine(settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run `work` with an engine on the configured (or embedded) database."""
    from service.core.db import create_engine

    async def run(url: str) -> T:
        engine = create_engine(url, pool_size=2, application_name="consent-service-cli")
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    from service.core.migrations import upgrade_to_head

    with database_url(settings) as url:
        if settings.is_dev:
            upgrade_to_head(url)  # dev: every command just works on a new database
        try:
            return asyncio.run(run(url))
        except ConsentServiceError as exc:
            raise fail(exc.detail) from None


def print_json(payload: dict[str, Any] | list[dict[str, Any]]) -> None:
    typer.echo(json.dumps(payload, default=str))


def parse_options(model: type[Q], **fields: Any) -> Q:
    """The request as the API would take it; exit 2 naming each bad option otherwise."""
    try:
        return model.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "options"
            typer.echo(f"error: {where.replace('_', '-')}: {error['msg']}", err=True)
        raise typer.Exit(2) from None

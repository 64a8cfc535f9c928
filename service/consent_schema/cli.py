"""`consent-service schema`: publish consent schema versions from files."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.cli_support import (
    CLI_ACTOR,
    fail,
    load_settings,
    parse_moment,
    print_json,
    with_session,
)
from service.core.errors import ConsentServiceError, NotFound
from service.core.logging import get_logger
from service.core.resources import EXAMPLE_SCHEMAS

schema_app = typer.Typer(
    rich_markup_mode=None,  # plain help: no boxes, no <bool> placeholders on flags
    help="Publish consent schema versions from files.",
    no_args_is_help=True,
)
log = get_logger("service.cli")


@schema_app.command("publish")
def schema_publish(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="A consent schema file (YAML or JSON).")
    ],
    property_name: Annotated[
        str | None, typer.Option("--property", help="Publish under this property instead.")
    ] = None,
    material: Annotated[
        bool,
        typer.Option(
            "--material/--non-material",
            help="Material (default) re-prompts everyone; non-material is wording only.",
        ),
    ] = True,
    create: Annotated[
        bool,
        typer.Option(
            "--create", help="Allow --property to name a property that does not exist yet."
        ),
    ] = False,
    effective_at: Annotated[
        str | None,
        typer.Option(
            "--effective-at",
            help="Take effect at this time (RFC 3339, e.g. 2027-01-01T00:00:00Z) instead of now.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Publish FILE as the next version of its property (nothing if unchanged)."""
    from service.consent_schema.document import load_document_file
    from service.consent_schema.publishing import publish
    from service.consent_schema.service import PublishedVersion, property_exists

    settings = load_settings()
    try:
        own = load_document_file(file)
        document = load_document_file(file, property_override=property_name)
    except ConsentServiceError as exc:
        raise fail(exc.detail) from None
    # A property is permanent once published: a typo in --property must not make a new one.
    renamed = document.property != own.property

    async def work(session: AsyncSession) -> tuple[PublishedVersion, bool]:
        if renamed and not create and not await property_exists(session, document.property):
            raise NotFound(
                f"there is no property {document.property!r} (the file names {own.property!r}); "
                "pass --create to start a new property under that name"
            )
        return await publish(
            session, document, material=material, published_by=CLI_ACTOR, effective_at=when
        )

    when = parse_moment("--effective-at", effective_at) if effective_at else None
    version, created = with_session(settings, work)
    if as_json:
        print_json(
            {
                "property": version.property,
                "version": version.version,
                "created": created,
                "material": version.material,
                "last_material_version": version.last_material_version,
                "content_hash": version.content_hash,
                "effective_at": version.summary()["effective_at"],
            }
        )
    elif created:
        kind = "material" if version.material else "non-material"
        typer.echo(
            f"published {version.property} version {version.version} ({kind})"
            + (f", in effect from {version.summary()['effective_at']}" if when else "")
        )
    elif version.effective_at > datetime.now(UTC):
        typer.echo(
            f"unchanged: {version.property} version {version.version} is pending, in effect "
            f"from {version.summary()['effective_at']}"
        )
    else:
        typer.echo(f"unchanged: {version.property} version {version.version} is current")


def publish_examples_if_empty(url: str) -> None:
    """Dev mode only: a newcomer's first start publishes the example schemas, so the README's
    `curl` answers at once. Production never publishes anything by itself."""
    from service.consent_schema.document import load_document_file
    from service.consent_schema.publishing import publish
    from service.consent_schema.service import any_property_exists
    from service.core.db import create_engine, create_sessionmaker

    files = sorted(EXAMPLE_SCHEMAS.glob("*.yaml"))

    async def run() -> list[str]:
        engine = create_engine(url, pool_size=1, application_name="consent-service-cli")
        try:
            async with create_sessionmaker(engine).begin() as session:
                if await any_property_exists(session):
                    return []
                published = []
                for path in files:
                    document = load_document_file(path)
                    await publish(session, document, material=True, published_by="dev-examples")
                    published.append(document.property)
                return published
        finally:
            await engine.dispose()

    for name in asyncio.run(run()):
        log.info("dev_example_schema_published", property=name)


@schema_app.command("cancel")
def schema_cancel(
    property_name: Annotated[str, typer.Option("--property", help="The property.")],
    version: Annotated[int, typer.Option("--version", help="The pending version.")],
) -> None:
    """Cancel a version published with --effective-at, before it takes effect."""
    from service.consent_schema.publishing import cancel

    settings = load_settings()

    async def work(session: AsyncSession) -> None:
        await cancel(session, property_name, version, cancelled_by=CLI_ACTOR)

    with_session(settings, work)
    typer.echo(f"cancelled {property_name} version {version}: it will not take effect")

"""`consent-service`: serve, migrate, manage API keys, write the OpenAPI document."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import structlog
import typer
import uvicorn
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.config import Settings, dev_key_path, ensure_dev_key
from service.core.embedded import database_url
from service.core.errors import ConsentServiceError

app = typer.Typer(
    help="The consent record service: a self-hosted consent ledger.",
    no_args_is_help=True,
    add_completion=False,
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
schema_app = typer.Typer(help="Publish consent schema versions from files.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")

T = TypeVar("T")
log = structlog.get_logger("service.cli")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
OPENAPI_PATH = PROJECT_ROOT / "openapi" / "openapi.json"
EXAMPLE_SCHEMAS = PROJECT_ROOT / "examples" / "schemas"
FILE_SCHEMA_PATH = EXAMPLE_SCHEMAS / "consent-schema.schema.json"
CLI_ACTOR = "cli"
APP_FACTORY = "service.app:create_app"


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            name = f"CONSENT_{field.upper()}" if field else "configuration"
            typer.echo(f"error: {name}: {error['msg']}", err=True)
        raise typer.Exit(2) from None


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one transaction: committed if it returns, rolled back if it raises."""
    from service.core.db import create_engine, create_sessionmaker

    async def run(url: str) -> T:
        engine = create_engine(url, pool_size=1, application_name="consent-service-cli")
        try:
            async with create_sessionmaker(engine).begin() as session:
                return await work(session)
        finally:
            await engine.dispose()

    from service.core.migrations import upgrade_to_head

    with database_url(settings) as url:
        if settings.is_dev:
            upgrade_to_head(url)  # dev: every command just works on a new database
        try:
            return asyncio.run(run(url))
        except ConsentServiceError as exc:
            raise _fail(exc.detail) from None


def _print_json(payload: dict[str, Any] | list[dict[str, Any]]) -> None:
    typer.echo(json.dumps(payload, default=str))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Serve the API; without CONSENT_DATABASE_URL, on an embedded PostgreSQL."""
    from service.core.logging import configure_logging

    settings = _settings()
    configure_logging(settings.log_level)
    with database_url(settings) as url, _metrics_folder(workers):
        _prepare_and_serve(settings, url, host=host, port=port, workers=workers)
    log.info("stopped")


@contextlib.contextmanager
def _metrics_folder(workers: int) -> Iterator[None]:
    """Several workers add up their metrics through files in one folder, removed at the end."""
    if workers == 1 or "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="consent-metrics-") as folder:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        try:
            yield
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]


def _prepare_and_serve(settings: Settings, url: str, *, host: str, port: int, workers: int) -> None:
    from service.core.migrations import upgrade_to_head

    if settings.is_dev:
        # Production migrates as its own step (the compose `migrate` service); dev just works.
        upgrade_to_head(url)
        if settings.ip_hash_salt is None:
            # Once, before workers start, so they share one key.
            _, created = ensure_dev_key(settings)
            if created:
                log.warning(
                    "dev_ip_hash_key_generated",
                    path=str(dev_key_path(settings)),
                    hint="set CONSENT_IP_HASH_SALT in production; keep it outside the database",
                )
        _publish_examples_if_empty(url)
    # Workers are fresh processes that read their settings from the environment.
    os.environ["CONSENT_DATABASE_URL"] = url
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "workers": workers,
        "factory": True,
        # Client addresses are handled by the app (trusted proxies only) and never logged.
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "log_config": None,
        "timeout_graceful_shutdown": 10,
    }
    if workers == 1:
        GracefulServer(uvicorn.Config(APP_FACTORY, **options)).run()
    else:
        with contextlib.suppress(KeyboardInterrupt):
            uvicorn.run(APP_FACTORY, **options)


class GracefulServer(uvicorn.Server):
    """uvicorn raises Ctrl-C again after its graceful shutdown, which turns a clean stop into a
    traceback; the shutdown has already happened, so here the signal ends there."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        handlers = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)


def _publish_examples_if_empty(url: str) -> None:
    """Dev mode only: a newcomer's first start publishes the example schemas, so the README's
    `curl` answers at once. Production never publishes anything by itself."""
    from service.consent_schema.document import load_document_file
    from service.consent_schema.versions import any_property_exists, publish
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


@app.command()
def migrate() -> None:
    """Migrate the database to the newest schema (idempotent; safe to run concurrently)."""
    from service.core.logging import configure_logging
    from service.core.migrations import head_revision, upgrade_to_head

    settings = _settings()
    configure_logging(settings.log_level)
    with database_url(settings) as url:
        upgrade_to_head(url)
    typer.echo(f"database at revision {head_revision()}", err=True)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what uses the key, e.g. 'dsr-team'.")],
    scopes: Annotated[
        str, typer.Option(help="Comma-separated: dsr:read, dsr:erase, schemas:write, audit:read.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Create an API key. Its secret is printed once and cannot be shown again."""
    from service.auth.keys import CreatedKey, create_key, parse_scopes

    settings = _settings()
    try:
        scope_list = parse_scopes(scopes)
    except ConsentServiceError as exc:
        raise _fail(exc.detail, 2) from None

    async def work(session: AsyncSession) -> CreatedKey:
        return await create_key(session, name=name, scopes=scope_list)

    key = _with_session(settings, work)
    if as_json:
        _print_json({"id": key.id, "name": key.name, "scopes": key.scopes, "secret": key.secret})
        return
    typer.echo(f"created {key.id} ({key.name}) with scopes {', '.join(key.scopes)}")
    typer.echo(f"secret (shown once, store it now): {key.secret}")


@keys_app.command("list")
def keys_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List API keys (never their secrets)."""
    from service.auth.keys import list_keys

    settings = _settings()

    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        return [
            {
                "id": row.id,
                "name": row.name,
                "scopes": row.scopes,
                "created_at": row.created_at.isoformat(),
                "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
                "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
            }
            for row in await list_keys(session)
        ]

    rows = _with_session(settings, work)
    if as_json:
        _print_json(rows)
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
    from service.auth.keys import revoke_key

    settings = _settings()

    async def work(session: AsyncSession) -> str:
        return (await revoke_key(session, key_id)).isoformat()

    revoked_at = _with_session(settings, work)
    if as_json:
        _print_json({"id": key_id, "revoked_at": revoked_at})
    else:
        typer.echo(f"revoked {key_id} at {revoked_at}")


@schema_app.command("publish")
def schema_publish(
    file: Annotated[Path, typer.Argument(help="A consent schema file (YAML or JSON).")],
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
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Publish FILE as the next version of its property (nothing if unchanged)."""
    from service.consent_schema.document import load_document_file
    from service.consent_schema.versions import PublishedVersion, publish

    settings = _settings()
    try:
        document = load_document_file(file, property_override=property_name)
    except ConsentServiceError as exc:
        raise _fail(exc.detail) from None

    async def work(session: AsyncSession) -> tuple[PublishedVersion, bool]:
        return await publish(session, document, material=material, published_by=CLI_ACTOR)

    version, created = _with_session(settings, work)
    if as_json:
        _print_json(
            {
                "property": version.property,
                "version": version.version,
                "created": created,
                "material": version.material,
                "last_material_version": version.last_material_version,
                "content_hash": version.content_hash,
            }
        )
    elif created:
        kind = "material" if version.material else "non-material"
        typer.echo(f"published {version.property} version {version.version} ({kind})")
    else:
        typer.echo(f"unchanged: {version.property} version {version.version} is current")


@app.command()
def openapi(
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 if the committed document differs.")
    ] = False,
    output: Annotated[Path, typer.Option(help="Where the document lives.")] = OPENAPI_PATH,
) -> None:
    """Write the committed API documents: the OpenAPI document of the app and the JSON Schema of
    consent schema files (or, with --check, fail if either is out of date)."""
    from service.openapi import render_file_schema, render_openapi

    documents = {output: render_openapi(), FILE_SCHEMA_PATH: render_file_schema()}
    for path, document in documents.items():
        if check:
            if (path.read_text() if path.exists() else "") != document:
                raise _fail(f"{path} is out of date; run: uv run consent-service openapi")
            typer.echo(f"{path} is current", err=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(document)
        typer.echo(f"wrote {path}", err=True)

"""The FastAPI application: built by `create_app`, resources opened in its lifespan."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp

from service import __version__
from service.banner.client_ip import ClientAddress
from service.banner.events import ConsentEventIn
from service.banner.routes import router as banner_router
from service.banner.writer import EventWriter
from service.consent_schema.routes import router as consent_schema_router
from service.consent_schema.versions import SchemaCatalog
from service.core.config import Settings, dev_key_path, ensure_dev_key, get_settings
from service.core.db import create_engine, create_sessionmaker, sync_dsn
from service.core.embedded import database_url
from service.core.errors import install_error_handlers
from service.core.hashing import Hasher
from service.core.hot_routes import HotPathApp, install_hot_routes
from service.core.logging import configure_logging, get_logger
from service.core.migrations import head_revision
from service.core.observe import REQUEST_METRICS, ObserveMiddleware
from service.dsr.routes import router as dsr_router
from service.health.routes import router as health_router

log = get_logger("service.app")

DESCRIPTION = """\
A self-hosted consent ledger. Cookie banners record every consent decision here and read the
current consent schema; a privacy team answers data-subject requests (history, export, erasure).

* **Banner API** — public, CORS-enabled, no key.
* **DSR and admin API** — `Authorization: Bearer <key>` with scopes
  (`dsr:read`, `dsr:erase`, `schemas:write`, `audit:read`).
* Every error is an RFC 9457 `application/problem+json` document.
* No raw IP address is ever stored or logged: only a keyed HMAC-SHA256 with its key id.
"""

TAGS = [
    {
        "name": "banner",
        "description": "Record consent events and read a subject's current state. Public, CORS.",
    },
    {
        "name": "consent schema",
        "description": "What the banner shows: categories, cookie inventory, policy, signals. "
        "Immutable numbered versions; publishing needs the `schemas:write` scope.",
    },
    {
        "name": "data-subject requests",
        "description": "Find, export and erase a person's consent history by subject id, IP "
        "address or account id; every action is audited. Identifiers travel in request bodies.",
    },
    {"name": "operations", "description": "Health, readiness and metrics."},
]


def build_hasher(settings: Settings) -> Hasher:
    key = settings.ip_hash_salt
    if key is None:
        # Settings refuse production without a key, so this is dev mode.
        key, created = ensure_dev_key(settings)
        if created:
            log.warning(
                "dev_ip_hash_key_generated",
                path=str(dev_key_path(settings)),
                hint="set CONSENT_IP_HASH_SALT in production; keep the key outside the database",
            )
    return Hasher.from_secrets(key, settings.ip_hash_previous_salts)


@asynccontextmanager
async def _resources(app: FastAPI, settings: Settings, url: str) -> AsyncIterator[None]:
    engine = create_engine(url, pool_size=settings.db_pool_size)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = create_sessionmaker(engine)
    app.state.hasher = build_hasher(settings)
    app.state.client_address = ClientAddress(settings.trusted_proxies)
    app.state.migration_head = head_revision()
    app.state.catalog = SchemaCatalog(engine)
    app.state.clock = utc_now
    # The banner endpoints read through plain asyncpg (no ORM on the hot path).
    app.state.pool = await asyncpg.create_pool(
        sync_dsn(url),
        min_size=1,
        max_size=settings.db_pool_size,
        command_timeout=30,
        server_settings={"application_name": "consent-service"},
    )
    writer = EventWriter(sync_dsn(url))
    app.state.writer = writer
    writer.start()
    # What is loaded by now (FastAPI, SQLAlchemy, pydantic models) lives as long as the process:
    # out of the collector's way, its full collections stay short (they showed as latency spikes).
    gc.collect()
    gc.freeze()
    log.info("startup", env=settings.env.value, version=__version__)
    try:
        yield
    finally:
        await writer.close()  # what was accepted is committed before the pool closes
        await app.state.pool.close()
        await engine.dispose()
        REQUEST_METRICS.flush()
        log.info("shutdown")


def utc_now() -> datetime:
    return datetime.now(UTC)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the models of bodies the app parses itself (the event body comes
    as JSON or text/plain, so it is read by hand and described here)."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        extra = ConsentEventIn.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(extra.pop("$defs", {}))
        schemas["ConsentEventIn"] = extra
        app.openapi_schema = document
    return app.openapi_schema


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Normally the URL is configured (`serve` sets it); an app built bare runs embedded.
        with database_url(settings) as url:
            async with _resources(app, settings, url):
                yield

    app = HotPathApp(
        title="Consent record service",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        # Metrics are Prometheus (/metrics); FastAPI's own OpenTelemetry hooks would only add
        # per-request work.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    install_error_handlers(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.include_router(banner_router)
    app.include_router(consent_schema_router)
    app.include_router(dsr_router)
    app.include_router(health_router)
    cors: dict[str, Any] | None = (
        {
            "allow_origins": settings.cors_origins,
            "allow_methods": ["GET", "POST"],
            "allow_headers": ["Content-Type", "If-None-Match", "X-Request-ID"],
            "expose_headers": ["ETag", "X-Request-ID"],
            "max_age": 600,
        }
        if settings.cors_origins
        else None
    )
    if cors is not None:
        app.add_middleware(CORSMiddleware, **cors)
    app.add_middleware(ObserveMiddleware)

    def wrap(inner: ASGIApp) -> ASGIApp:
        """The same middleware, in the same order, for the hot routes' own stack."""
        return ObserveMiddleware(CORSMiddleware(inner, **cors) if cors is not None else inner)

    install_hot_routes(app, banner_router, consent_schema_router, wrap=wrap)
    return app

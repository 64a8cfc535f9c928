"""The FastAPI application: built by `create_app`, resources opened in its lifespan."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from service import __version__
from service.banner.client import router as client_router
from service.banner.routes import router as banner_router
from service.consent_schema.routes import router as consent_schema_router
from service.consent_schema.service import SchemaCatalog
from service.console.routes import router as console_router
from service.core.api_docs import install_docs
from service.core.client_address import ClientAddress
from service.core.config import PoolMode, Settings, get_settings
from service.core.cors import BrowserOrigins, ProblemCORSMiddleware
from service.core.db import create_engine, create_sessionmaker, role_powers
from service.core.db_errors import install_database_error_handlers
from service.core.db_url import sync_dsn
from service.core.embedded import database_url
from service.core.errors import install_error_handlers
from service.core.hashing import hasher_from_settings
from service.core.logging import configure_logging, get_logger, readable_logs
from service.core.migrations import head_revision
from service.core.observe import REQUEST_METRICS, ObserveMiddleware
from service.core.periodic import Periodic
from service.core.pipeline import ConsentAPI
from service.core.rate_limit import RateLimiter
from service.dsr.routes import router as dsr_router
from service.health.routes import router as health_router
from service.ledger.decisions import LatestDecisions
from service.ledger.partitions import INTERVAL_SECONDS as PARTITIONS_INTERVAL
from service.ledger.partitions import months_ahead
from service.ledger.receipts import receipt_signer_from_settings
from service.ledger.routes import router as ledger_router
from service.ledger.sealer import seal_ledger
from service.ledger.writer import EventWriter
from service.retention.purge import CHECK_SECONDS, purge_when_due
from service.state import State, install
from service.stats.rollup import seal_and_roll_up
from service.stats.routes import router as stats_router

log = get_logger("service.app")

DESCRIPTION = """\
A self-hosted consent ledger. Cookie banners record every consent decision here and read the
current consent schema; a privacy team answers data-subject requests (history, export, erasure).

* **Banner API** — public, CORS-enabled, no key.
* **DSR and admin API** — `Authorization: Bearer <key>` with scopes
  (`dsr:read`, `dsr:erase`, `dsr:withdraw`, `schemas:write`, `audit:read`, `stats:read`).
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
    {
        "name": "statistics",
        "description": "Exact counts per UTC day and schema version: events by type, decisions, "
        "opt-in per category, signals. Needs the `stats:read` scope.",
    },
    {
        "name": "evidence",
        "description": "The public keys that verify consent receipts (docs/evidence.md).",
    },
    {"name": "operations", "description": "Health, readiness and metrics."},
]


@asynccontextmanager
async def _resources(app: ConsentAPI, settings: Settings, url: str) -> AsyncIterator[None]:
    pooled = settings.db_pool_mode == PoolMode.TRANSACTION
    engine = create_engine(
        url,
        pool_size=settings.db_pool_size,
        command_timeout=settings.db_command_timeout,
        transaction_pooled=pooled,
    )
    writer = EventWriter(
        sync_dsn(url),
        receipts=receipt_signer_from_settings(settings),
        command_timeout=settings.db_command_timeout,
        transaction_pooled=pooled,
    )
    decisions = LatestDecisions(engine)
    install(
        app,
        State(
            settings=settings,
            engine=engine,
            sessionmaker=create_sessionmaker(engine),
            catalog=SchemaCatalog(engine),
            writer=writer,
            decisions=decisions,
            hasher=hasher_from_settings(settings),
            client_address=ClientAddress(settings.trusted_proxies, settings.forwarded_header),
            clock=utc_now,
            migration_head=head_revision(),
            event_limiter=(
                RateLimiter(settings.event_rate_limit) if settings.event_rate_limit else None
            ),
            auth_failures=RateLimiter(settings.auth_failure_limit),
            origins=BrowserOrigins(settings.cors_origins),
        ),
    )
    checked = await check_role(engine, settings)
    # A database that is not there yet is checked once it is: every few seconds until then.
    later = None if checked else asyncio.create_task(_check_role_when_reachable(engine, settings))
    writer.start()
    decisions.start()

    async def seal_all() -> None:
        # The statistics seal first: the ledger seals what it covers (docs/evidence.md).
        await seal_and_roll_up(engine)
        await seal_ledger(engine)

    rollup = Periodic("stats_rollup", settings.seal_seconds, seal_all)
    rollup.start()
    # A purge (when configured) of what is due now, when the last one is that many hours old;
    # one worker at a time (docs/retention.md).
    every = timedelta(hours=settings.retention_purge_hours)
    purging = Periodic(
        "retention_purge",
        min(CHECK_SECONDS, every.total_seconds()),
        lambda: purge_when_due(engine, every),
        at_start=True,
    )
    purging.start()
    # This month's event partition and the next three (docs/retention.md, "Partitions").
    partitions = Periodic(
        "event_partitions", PARTITIONS_INTERVAL, lambda: months_ahead(engine), at_start=True
    )
    partitions.start()
    # What is loaded by now (FastAPI, SQLAlchemy, pydantic models) lives as long as the process:
    # out of the collector's way, its full collections stay short (they showed as latency spikes).
    gc.collect()
    gc.freeze()
    # A request allocates a few hundred containers, nearly all freed by reference counting; at
    # the default threshold (700) the collector still ran a young collection every few requests.
    # Cycles are rare here: collecting them every GC_YOUNG_THRESHOLD allocations is soon enough.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    log.info("startup", env=settings.env.value, version=__version__)
    try:
        yield
    finally:
        if later is not None:
            later.cancel()
        await partitions.close()
        await purging.close()
        await rollup.close()
        await writer.close()  # what was accepted is committed before the pool closes
        await decisions.close()
        await engine.dispose()
        REQUEST_METRICS.flush()
        log.info("shutdown")


ROLE_CHECK_INTERVAL_SECONDS = 5.0
GC_YOUNG_THRESHOLD = 20_000


async def check_role(engine: AsyncEngine, settings: Settings, *, quiet: bool = False) -> bool:
    """The service should log in as a member of `consent_api` that owns nothing
    (docs/guarantees.md, "Least privilege"). In production a more powerful role is a loud
    warning, or a refusal to start with CONSENT_REQUIRE_LEAST_PRIVILEGE, which also refuses to
    start while the role cannot be checked (it would otherwise serve as whatever role it is once
    the database appears). False: not checked yet (the database is not reachable, or not
    migrated: whether the role may record events is known once it is)."""
    if settings.is_dev:
        return True
    try:
        role = await role_powers(engine)
    except Exception as exc:
        if settings.require_least_privilege:
            raise RuntimeError(
                "CONSENT_REQUIRE_LEAST_PRIVILEGE is set and the database role cannot be checked "
                f"({type(exc).__name__}): start the service once its database is up"
            ) from None
        if not quiet:
            log.warning("database_role_not_checked", error=type(exc).__name__)
        return False
    powers = role.excess
    message = (
        f"the service connects to PostgreSQL as a role that is {' and '.join(powers)}: it could "
        "switch off the protections of the evidence; connect as a login role that is a member "
        "of consent_api and owns nothing (README, Operations)"
    )
    if powers and settings.require_least_privilege:
        raise RuntimeError(message)
    if role.records is None:
        return False  # not migrated yet: looked at again until it is, the grant with it
    if role.records is False:
        # Too weak rather than too strong: every consent event would be a 503 (core/db_errors.py).
        log.error(
            "database_role_cannot_record",
            detail="the service's database role may not record consent events: make it a member "
            "of consent_api (GRANT consent_api TO it; README, Operations)",
        )
    if powers:
        log.warning("database_role_too_powerful", powers=powers, detail=message)
    return True


async def _check_role_when_reachable(engine: AsyncEngine, settings: Settings) -> None:
    while True:
        await asyncio.sleep(ROLE_CHECK_INTERVAL_SECONDS)
        if await check_role(engine, settings, quiet=True):
            return


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings | None = None) -> ConsentAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, human=readable_logs(settings))

    @asynccontextmanager
    async def lifespan(app: ConsentAPI) -> AsyncIterator[None]:
        # Normally the URL is configured (`serve` sets it); an app built bare runs embedded.
        with database_url(settings) as url:
            async with _resources(app, settings, url):
                yield

    app = ConsentAPI(
        title="Consent record service",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        # One component per model, named after it (no -Input/-Output pairs).
        separate_input_output_schemas=False,
        docs_url=None,  # served from a package instead (core/api_docs.py)
        redoc_url=None,
        # A path with a trailing slash it does not declare is a 404 problem, not Starlette's 307
        # to an absolute URL built from the request's Host header (docs/architecture.md,
        # "Limits").
        redirect_slashes=False,
        # Metrics are Prometheus (/metrics); FastAPI's own OpenTelemetry hooks would only add
        # per-request work.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    install(app, None)  # until the lifespan has made the collaborators
    install_error_handlers(app)
    install_database_error_handlers(app)
    app.include_router(banner_router)
    app.include_router(client_router)
    app.include_router(consent_schema_router)
    app.include_router(dsr_router)
    app.include_router(stats_router)
    app.include_router(console_router)
    app.include_router(ledger_router)
    app.include_router(health_router)
    install_docs(app)
    # The one middleware stack, innermost first; hot routes pass the same (core/pipeline.py).
    if settings.cors_origins:
        app.add_middleware(
            ProblemCORSMiddleware,
            allow_origins=settings.cors_origins,
            # A beacon is always sent with credentials: its preflight must allow them. Never
            # with `*` (browsers refuse credentials with a wildcard origin anyway).
            allow_credentials="*" not in settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "If-None-Match", "X-Request-ID"],
            expose_headers=["ETag", "X-Request-ID", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(ObserveMiddleware)
    # Built now, so a route the fast dispatch cannot serve fails here, at startup.
    app.middleware_stack = app.build_middleware_stack()
    return app

"""The app's collaborators: one typed object made in the lifespan, one dependency for each.

This is the only module that sets or reads the app's collaborators. Routes declare what they use
(`catalog: Catalog`, `session: Session`, …); hot routes may too, since these dependencies are
`async` functions of the request alone (docs/architecture.md, "Collaborators").
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.consent_schema.service import SchemaCatalog
from service.core.client_address import ClientAddress
from service.core.config import Settings
from service.core.cors import BrowserOrigins
from service.core.hashing import Hasher
from service.core.pipeline import ConsentAPI
from service.core.rate_limit import RateLimiter
from service.ledger.decisions import LatestDecisions
from service.ledger.writer import EventWriter


@dataclass(slots=True)
class State:
    """Everything a request may use, made once per process by the app's lifespan.

    Mutable only so that tests can replace the clock."""

    settings: Settings
    engine: AsyncEngine  # the one pool of this process (CONSENT_DB_POOL_SIZE connections)
    sessionmaker: async_sessionmaker[AsyncSession]
    catalog: SchemaCatalog
    writer: EventWriter  # plus its own connection, for the group commit
    decisions: LatestDecisions  # the group read of subjects' states (borrows from the pool)
    hasher: Hasher
    client_address: ClientAddress
    clock: Callable[[], datetime]
    migration_head: str | None
    event_limiter: RateLimiter | None  # None: no limit on consent events (the default)
    auth_failures: RateLimiter
    origins: BrowserOrigins  # which browsers may record events (CONSENT_CORS_ORIGINS)


def install(app: ConsentAPI, state: State | None) -> None:
    app.services = state


def of(app: ConsentAPI) -> State:
    """The running app's collaborators (for tests and tools holding the app)."""
    state: State | None = app.services
    if state is None:
        raise RuntimeError("the app's lifespan has not started")
    return state


async def _settings(request: Request) -> Settings:
    return of(request.app).settings


async def _engine(request: Request) -> AsyncEngine:
    return of(request.app).engine


async def _catalog(request: Request) -> SchemaCatalog:
    return of(request.app).catalog


async def _writer(request: Request) -> EventWriter:
    return of(request.app).writer


async def _decisions(request: Request) -> LatestDecisions:
    return of(request.app).decisions


async def _hasher(request: Request) -> Hasher:
    return of(request.app).hasher


async def _client_address(request: Request) -> ClientAddress:
    return of(request.app).client_address


async def _clock(request: Request) -> Callable[[], datetime]:
    return of(request.app).clock


async def _event_limiter(request: Request) -> RateLimiter | None:
    return of(request.app).event_limiter


async def _auth_failures(request: Request) -> RateLimiter:
    return of(request.app).auth_failures


async def _origins(request: Request) -> BrowserOrigins:
    return of(request.app).origins


async def _migration_head(request: Request) -> str | None:
    return of(request.app).migration_head


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request. The route that writes owns the commit, so a 2xx is only ever sent
    after its transaction is durable; anything left uncommitted is rolled back on close."""
    async with of(request.app).sessionmaker() as session:
        yield session


SettingsOf = Annotated[Settings, Depends(_settings)]
Engine = Annotated[AsyncEngine, Depends(_engine)]
Catalog = Annotated[SchemaCatalog, Depends(_catalog)]
Writer = Annotated[EventWriter, Depends(_writer)]
Decisions = Annotated[LatestDecisions, Depends(_decisions)]
Hashing = Annotated[Hasher, Depends(_hasher)]
ClientAddressOf = Annotated[ClientAddress, Depends(_client_address)]
Clock = Annotated[Callable[[], datetime], Depends(_clock)]
MigrationHead = Annotated[str | None, Depends(_migration_head)]
EventLimiter = Annotated[RateLimiter | None, Depends(_event_limiter)]
AuthFailures = Annotated[RateLimiter, Depends(_auth_failures)]
Origins = Annotated[BrowserOrigins, Depends(_origins)]
Session = Annotated[AsyncSession, Depends(_session)]

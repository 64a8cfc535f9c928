"""Publishing and reading consent schema versions.

Numbers are 1, 2, 3 … per property with no gaps: a publish locks its property's row, so concurrent
publishers queue instead of racing for a number. Versions never change once written, so readers
cache them for the life of the process; only "which version is current" is looked up again.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from service.consent_schema.document import (
    canonical_json,
)
from service.consent_schema.tables import PropertyRow, SchemaCancellationRow, SchemaVersionRow
from service.core.db import autocommit
from service.core.errors import NotFound
from service.core.times import iso

CURRENT_POINTER_TTL_SECONDS = 1.0
MAX_CACHED_POINTERS = 4096


@dataclass(frozen=True, slots=True)
class PublishedVersion:
    property: str
    version: int
    material: bool
    last_material_version: int
    content_hash: str
    published_at: datetime
    effective_at: datetime  # when it takes (or took) effect
    content: dict[str, Any]
    # Derived once from the content, for the hot path.
    required: frozenset[str]
    optional: frozenset[str]
    ttl_days: int
    # Per signal: applied while present (`true` / `apply`), or recorded once as the person's
    # decision (`record`); a signal in neither is ignored (docs/policies.md, "Signals").
    honours: dict[str, bool]
    records: dict[str, bool]
    # The response body of this version, serialised once: versions never change.
    body: bytes

    @classmethod
    def from_row(cls, row: Any) -> PublishedVersion:
        """From a SchemaVersionRow or a result row with its columns."""
        categories = row.content["categories"]
        # Canonical key order, whether the content was just written or read back from JSONB
        # (which orders keys its own way): the same version always reads the same.
        content = json.loads(canonical_json(row.content))
        version = cls(
            property=row.property,
            version=row.version,
            material=row.material,
            last_material_version=row.last_material_version,
            content_hash=row.content_sha256,
            published_at=row.published_at,
            effective_at=row.effective_at or row.published_at,
            content=content,
            body=b"",
            required=frozenset(c["key"] for c in categories if c["required"]),
            optional=frozenset(c["key"] for c in categories if not c["required"]),
            ttl_days=row.content["consent_ttl_days"],
            honours={s: v is True or v == "apply" for s, v in row.content["signals"].items()},
            records={s: v == "record" for s, v in row.content["signals"].items()},
        )
        body = {**version.summary(), "content": content}
        return replace(version, body=json.dumps(body, separators=(",", ":")).encode())

    def summary(self) -> dict[str, Any]:
        """What identifies this version (everything but its content), as JSON values: the
        shape of `bodies.SchemaVersionSummary`, and of each version in an export."""
        return {
            "property": self.property,
            "version": self.version,
            "material": self.material,
            "published_at": iso(self.published_at),
            "effective_at": iso(self.effective_at),
            "content_hash": self.content_hash,
            "last_material_version": self.last_material_version,
        }

    def etag(self) -> str:  # (a method: `property` is a field name here)
        return f'"{self.version}-{self.content_hash[:32]}"'


@dataclass(frozen=True, slots=True)
class Pending:
    """A version published to take effect later."""

    version: int
    last_material_version: int
    effective_at: datetime


@dataclass(frozen=True, slots=True)
class PropertyState:
    name: str
    current_version: int
    last_material_version: int
    pending: Pending | None = None

    def at(self, now: datetime) -> PropertyState:
        """The state in force at `now`: a pending version whose time has come is current, at
        that instant, in every process (no restart, no job: each reads the same row)."""
        if self.pending is None or now < self.pending.effective_at:
            return self
        return PropertyState(self.name, self.pending.version, self.pending.last_material_version)

    def seconds_until_change(self, now: datetime) -> float | None:
        if self.pending is None:
            return None
        return max(0.0, (self.pending.effective_at - now).total_seconds())


async def list_versions(session: AsyncSession, property_name: str) -> list[PublishedVersion]:
    rows = (
        await session.scalars(
            select(SchemaVersionRow)
            .where(SchemaVersionRow.property == property_name)
            .order_by(SchemaVersionRow.version)
        )
    ).all()
    if not rows:
        raise NotFound(f"no property named {property_name!r}")
    return [PublishedVersion.from_row(row) for row in rows]


async def property_exists(session: AsyncSession | AsyncConnection, property_name: str) -> bool:
    found = await session.scalar(select(PropertyRow.name).where(PropertyRow.name == property_name))
    return found is not None


async def any_property_exists(session: AsyncSession) -> bool:
    return bool(await session.scalar(text("SELECT EXISTS (SELECT 1 FROM consent_properties)")))


def _state_query(property_name: str) -> Select[Any]:
    """A property's pointers, with its pending version's (if any)."""
    pending = SchemaVersionRow
    return (
        select(
            PropertyRow.current_version,
            PropertyRow.last_material_version,
            pending.version,
            pending.last_material_version.label("pending_last_material"),
            func.coalesce(pending.effective_at, pending.published_at).label("due"),
        )
        .outerjoin(
            pending,
            and_(
                pending.property == PropertyRow.name,
                pending.version == PropertyRow.pending_version,
            ),
        )
        .where(PropertyRow.name == property_name, PropertyRow.current_version > 0)
    )


def _state_of(property_name: str, row: Any) -> PropertyState | None:
    if row is None:
        return None
    return PropertyState(
        property_name,
        row.current_version,
        row.last_material_version,
        Pending(row.version, row.pending_last_material, row.due) if row.version else None,
    )


async def property_state(session: AsyncSession, property_name: str) -> PropertyState:
    """The property's state in force now, read in `session` (no cache)."""
    row = (await session.execute(_state_query(property_name))).one_or_none()
    state = _state_of(property_name, row)
    if state is None:
        raise NotFound(f"no property named {property_name!r}")
    return state.at(datetime.now(UTC))


class SchemaCatalog:
    """Per-process cache of published versions (immutable, kept forever) and of each property's
    current pointer (looked up again after a second, or at once after a local publish).

    A pointer look-up is single-flight: when the cached pointer lapses under load, the requests
    that find it stale share one query instead of each running its own. An unknown property is
    remembered for the same second, so requests for names that do not exist cannot turn into a
    query each."""

    def __init__(self, engine: AsyncEngine) -> None:
        # Its own short connections: a request never holds one while it waits for something else.
        self._engine = engine
        self._versions: dict[tuple[str, int], PublishedVersion] = {}
        self._cancelled: dict[tuple[str, int], bool] = {}
        self._current: dict[str, tuple[float, PropertyState | None]] = {}
        self._lookups: dict[str, tuple[float, asyncio.Task[PropertyState | None]]] = {}

    def forget_current(self, property_name: str) -> None:
        self._current.pop(property_name, None)
        self._lookups.pop(property_name, None)

    async def state(self, property_name: str, *, fresh: bool = False) -> PropertyState:
        """The property's current pointer; `fresh` asks for one read after this call began."""
        now = time.monotonic()
        cached = self._current.get(property_name)
        if cached is not None and not fresh and now - cached[0] < CURRENT_POINTER_TTL_SECONDS:
            state = cached[1]
        else:
            state = await self._look_up(property_name, not_before=now if fresh else 0.0)
        if state is None:
            raise NotFound(f"no property named {property_name!r}")
        return state.at(datetime.now(UTC))

    async def _look_up(self, property_name: str, *, not_before: float) -> PropertyState | None:
        running = self._lookups.get(property_name)
        if running is None or running[0] < not_before:
            started = time.monotonic()
            task = asyncio.create_task(self._read_state(property_name))
            running = (started, task)
            self._lookups[property_name] = running
            task.add_done_callback(lambda done: self._finished(property_name, running, done))
        # Shielded: a waiter that goes away (client gone) does not cancel the others' look-up.
        return await asyncio.shield(running[1])

    def _finished(
        self,
        property_name: str,
        running: tuple[float, asyncio.Task[PropertyState | None]],
        task: asyncio.Task[PropertyState | None],
    ) -> None:
        if self._lookups.get(property_name) is not running:
            # Forgotten by a local publish (or overtaken by a fresher look-up): its answer may
            # predate what is current, so it is not cached.
            if not task.cancelled():
                task.exception()  # retrieved: every waiter may have gone
            return
        del self._lookups[property_name]
        if task.cancelled() or task.exception() is not None:
            return
        if len(self._current) >= MAX_CACHED_POINTERS:
            # Names that do not exist are remembered too, so a client inventing them cannot
            # grow this without bound: lapsed entries go first, then all of them.
            lapsed = time.monotonic() - CURRENT_POINTER_TTL_SECONDS
            self._current = {k: v for k, v in self._current.items() if v[0] >= lapsed}
            if len(self._current) >= MAX_CACHED_POINTERS:
                self._current.clear()
        self._current[property_name] = (running[0], task.result())

    async def _read_state(self, property_name: str) -> PropertyState | None:
        async with autocommit(self._engine) as connection:
            row = (await connection.execute(_state_query(property_name))).one_or_none()
        return _state_of(property_name, row)

    async def version(self, property_name: str, number: int) -> PublishedVersion:
        key = (property_name, number)
        cached = self._versions.get(key)
        if cached is not None:
            return cached
        async with autocommit(self._engine) as connection:
            row = (
                await connection.execute(
                    select(SchemaVersionRow).where(
                        SchemaVersionRow.property == property_name,
                        SchemaVersionRow.version == number,
                    )
                )
            ).one_or_none()
        if row is None:
            await self.state(property_name)  # 404 names the property if that is unknown
            raise NotFound(f"property {property_name!r} has no schema version {number}")
        published = PublishedVersion.from_row(row)
        self._versions[key] = published
        return published

    async def cancelled(self, property_name: str, number: int) -> bool:
        """Whether version `number` was cancelled before it took effect (no banner showed it).
        Asked only of a version before the current one, whose answer is final: only a pending
        version, after the current one, can be cancelled. Remembered for that reason."""
        key = (property_name, number)
        known = self._cancelled.get(key)
        if known is None:
            async with autocommit(self._engine) as connection:
                found = await connection.scalar(
                    select(SchemaCancellationRow.version).where(
                        SchemaCancellationRow.property == property_name,
                        SchemaCancellationRow.version == number,
                    )
                )
            known = self._cancelled[key] = found is not None
        return known

    async def current(self, property_name: str) -> PublishedVersion:
        state = await self.state(property_name)
        return await self.version(property_name, state.current_version)

"""API keys: create, list, revoke, and find the key behind a secret."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from service.auth.tables import ApiKeyRow
from service.core.db import autocommit
from service.core.errors import BadRequest, NotFound

SECRET_PREFIX = "csk_"  # noqa: S105 (a prefix, so leaked keys are recognisable)


class Scope(StrEnum):
    DSR_READ = "dsr:read"
    DSR_ERASE = "dsr:erase"
    DSR_WITHDRAW = "dsr:withdraw"
    SCHEMAS_WRITE = "schemas:write"
    AUDIT_READ = "audit:read"
    METRICS_READ = "metrics:read"
    STATS_READ = "stats:read"


@dataclass(frozen=True, slots=True)
class CreatedKey:
    id: str
    name: str
    scopes: list[str]
    secret: str


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key id (recorded in audits) and what it may do."""

    key_id: str
    scopes: frozenset[str]


def _digest(secret: str) -> str:
    # The secret is 256 random bits, so a fast unsalted hash is enough to make the table useless
    # to a thief; a slow password hash would only slow every request down.
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(raw: str | list[str]) -> list[str]:
    items = raw.split(",") if isinstance(raw, str) else raw
    scopes = sorted({item.strip() for item in items if item.strip()})
    known = {scope.value for scope in Scope}
    unknown = [scope for scope in scopes if scope not in known]
    if unknown:
        raise BadRequest(
            f"unknown scope(s): {', '.join(unknown)}; known scopes: {', '.join(sorted(known))}"
        )
    if not scopes:
        raise BadRequest("a key needs at least one scope")
    return scopes


def parse_key_name(raw: str) -> str:
    """The name without surrounding spaces; a key must be named: it is how a listing tells keys
    apart, and whose key to revoke."""
    name = raw.strip()
    if not name:
        raise BadRequest("a key needs a name (who or what uses it, e.g. 'dsr-team')")
    return name


async def create_key(session: AsyncSession, *, name: str, scopes: list[str]) -> CreatedKey:
    name = parse_key_name(name)
    key_id = "key_" + secrets.token_hex(8)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKeyRow(id=key_id, name=name, scopes=scopes, secret_sha256=_digest(secret)))
    await session.flush()
    return CreatedKey(id=key_id, name=name, scopes=scopes, secret=secret)


async def list_keys(session: AsyncSession) -> list[ApiKeyRow]:
    result = await session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at))
    return list(result)


async def revoke_key(session: AsyncSession, key_id: str) -> datetime:
    revoked_at = await session.scalar(
        update(ApiKeyRow)
        .where(ApiKeyRow.id == key_id)
        .values(revoked_at=func.coalesce(ApiKeyRow.revoked_at, func.now()))
        .returning(ApiKeyRow.revoked_at)
    )
    if revoked_at is None:
        raise NotFound(f"no API key with id {key_id!r}")
    return revoked_at


# One round trip: find the key, and note its use at most once a minute (a write on every DSR
# request would cost a commit each for a timestamp nobody needs to the second).
AUTHENTICATE = text(
    """
    WITH key AS (
        SELECT id, scopes, last_used_at FROM api_keys
        WHERE secret_sha256 = :digest AND revoked_at IS NULL
    ), touched AS (
        UPDATE api_keys SET last_used_at = now() FROM key
        WHERE api_keys.id = key.id
          AND (key.last_used_at IS NULL OR key.last_used_at < now() - interval '1 minute')
    )
    SELECT id, scopes FROM key
    """
)


async def authenticate(engine: AsyncEngine, secret: str) -> Principal | None:
    """The key behind `secret` if it exists and is not revoked; records its use."""
    # One statement, atomic alone: no BEGIN/COMMIT round trips around it.
    async with autocommit(engine) as connection:
        row = (await connection.execute(AUTHENTICATE, {"digest": _digest(secret)})).one_or_none()
    if row is None:
        return None
    return Principal(key_id=row.id, scopes=frozenset(row.scopes))

"""Data-subject requests: find, export and erase a person's consent history, auditing each.

A person is found by exactly one identifier. An IP or account id is hashed under every configured
key, current and previous, because records keep the hash of the key that was current when they
were made. Every action writes an audit row in the same transaction as its effect, keyed by a hash
of the identifier under a label of its own (never the identifier, never an event's stored hash).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import ColumnElement, Select, bindparam, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from service.consent_schema.document import canonical_json
from service.consent_schema.service import SchemaCatalog
from service.core.errors import NotFound, Unprocessable
from service.core.hashing import Hasher, HashKey, normalise_account_id, normalise_ip
from service.dsr.bodies import (
    DsrAction,
    DsrQuery,
    ErasureMode,
    HistoryRecord,
    IdentifierType,
    identifier_of,
)
from service.dsr.tables import DsrAuditRow
from service.ledger.event import (
    EXPORT_EVIDENCE_COLUMNS,
    RECORD_COLUMNS,
    record,
)
from service.ledger.tables import ConsentEventRow as Event
from service.ledger.tables import event_columns

# What a record shows (with the insertion sequence, the key of pagination), and what an export
# adds to it; both named once, in the ledger's definition of an event.
RECORD_SELECT = event_columns("seq", *RECORD_COLUMNS)
HISTORY_SELECT = (*RECORD_SELECT, *event_columns("page_url", "user_agent"))
EXPORT_SELECT = (
    *RECORD_SELECT,
    *event_columns(*EXPORT_EVIDENCE_COLUMNS),
    *event_columns("salt", "identity", "leaf", "receipt"),
)


def searched_hashes(query: DsrQuery, hasher: Hasher) -> list[tuple[str, str]]:
    """(key id, hash) pairs an IP or account id is stored as; empty for a subject id."""
    kind, value = identifier_of(query)
    if kind is IdentifierType.IP:
        return hasher.ip_candidates(value)
    if kind is IdentifierType.USER_ID:
        return hasher.user_candidates(value)
    return []


def match(query: DsrQuery) -> tuple[ColumnElement[bool], ...]:
    """The conditions an event matching `query` meets, with their values as bound parameters
    (`match_values`). Made once for each form a query takes: a statement built for every request
    costs SQLAlchemy more than PostgreSQL's look-up (docs/architecture.md, "Where a worker's CPU
    goes")."""
    kind, _ = identifier_of(query)
    return _conditions(
        kind, query.property is not None, query.since is not None, query.until is not None
    )


@functools.cache
def _conditions(
    kind: IdentifierType, by_property: bool, since: bool, until: bool
) -> tuple[ColumnElement[bool], ...]:
    conditions: list[ColumnElement[bool]] = [
        Event.subject_id == bindparam("subject_id")
        if kind is IdentifierType.SUBJECT_ID
        else (Event.ip_hash if kind is IdentifierType.IP else Event.user_hash).in_(
            bindparam("hashes", expanding=True)
        )
    ]
    if by_property:
        conditions.append(Event.property == bindparam("property"))
    if since:
        conditions.append(Event.recorded_at >= bindparam("since"))
    if until:
        conditions.append(Event.recorded_at < bindparam("until"))
    return tuple(conditions)


def match_values(query: DsrQuery, hasher: Hasher) -> dict[str, Any]:
    """The bound parameters of `match(query)`."""
    kind, _ = identifier_of(query)
    values: dict[str, Any] = (
        {"subject_id": query.subject_id}
        if kind is IdentifierType.SUBJECT_ID
        else {"hashes": [digest for _, digest in searched_hashes(query, hasher)]}
    )
    for name in ("property", "since", "until"):
        if getattr(query, name) is not None:
            values[name] = getattr(query, name)
    return values


def audit_hash(
    query: DsrQuery, hasher: Hasher, key: HashKey | None = None, *, as_given: bool = False
) -> str:
    """What an audit row keeps of the query's identifier: its hash under `key` (the current), of
    the identifier's one form (an account id's as its events are stored), or with `as_given`,
    of an account id as the request spelled it (what rows audited before account ids had one
    form keep)."""
    kind, value = identifier_of(query)
    if kind is IdentifierType.IP:
        value = normalise_ip(value)
    elif kind is IdentifierType.USER_ID and not as_given:
        value = normalise_account_id(value)
    return (key or hasher.current).digest(f"audit-{kind.value}", value)


# Made once (see `match`).
AUDIT_INSERT = insert(DsrAuditRow)


async def record_audit(
    session: AsyncSession,
    *,
    action: DsrAction,
    actor: str,
    query: DsrQuery,
    hasher: Hasher,
    matched: int,
    deleted: int = 0,
    anonymised: int = 0,
    mode: ErasureMode | None = None,
    reference: str | None = None,
    audit_id: uuid.UUID | None = None,
) -> uuid.UUID:
    audit_id = audit_id or uuid.uuid4()
    await session.execute(
        AUDIT_INSERT,
        {
            "id": audit_id,
            "action": action.value,
            "actor": actor,
            "identifier_type": identifier_of(query)[0].value,
            "identifier_hash": audit_hash(query, hasher),
            "hash_key_id": hasher.current.key_id,
            "property": query.property,
            "since": query.since,
            "until": query.until,
            "mode": mode.value if mode else None,
            "reference": reference,
            "matched": matched,
            "deleted": deleted,
            "anonymised": anonymised,
            "request_id": structlog.contextvars.get_contextvars().get("request_id"),
        },
    )
    return audit_id


# --- history -------------------------------------------------------------------------------------


def _query_signature(query: DsrQuery, hasher: Hasher) -> str:
    scope = query.model_dump(
        mode="json", include={"subject_id", "ip", "user_id", "property", "since", "until"}
    )
    return hasher.current.digest("cursor", canonical_json(scope).decode())[:16]


# A cursor is a position signed under the hash key (with what it is a position in), so a client
# can neither forge a position nor move a cursor to another query; the position is checked to be
# a sequence number before it reaches PostgreSQL.
MAX_SEQ = 2**63 - 1


def sign_cursor(hasher: Hasher, label: str, position: int) -> str:
    mac = hasher.current.digest(f"cursor\x00{label}", str(position))[:32]
    return base64.urlsafe_b64encode(f"{position}.{mac}".encode()).decode().rstrip("=")


def read_cursor(hasher: Hasher, label: str, cursor: str, *, pointer: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        position_text, mac = raw.split(".", 1)
        position = int(position_text)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        position, mac = -1, ""
    expected = sign_cursor(hasher, label, position) if 0 <= position <= MAX_SEQ else None
    # Compared as issued, unpadded: one cursor has one spelling.
    if expected is None or not hmac.compare_digest(expected, cursor) or not mac:
        why = "is not a cursor this service issued for this query"
        raise Unprocessable(
            f"cursor {why}", extra={"errors": [{"pointer": pointer, "detail": why}]}
        )
    return position


async def records(rows: Sequence[Any], catalog: SchemaCatalog) -> list[HistoryRecord]:
    result = []
    for row in rows:
        version = await catalog.version(row.property, row.schema_version)
        stored = record(row, optional=version.optional, ttl_days=version.ttl_days)
        stored |= {"page_url": row.page_url, "user_agent": row.user_agent}
        result.append(HistoryRecord.model_validate(stored))
    return result


@functools.cache
def _history(conditions: tuple[ColumnElement[bool], ...]) -> Select[Any]:
    return (
        select(*HISTORY_SELECT)
        .where(*conditions, Event.seq > bindparam("after"))
        .order_by(Event.seq)
        .limit(bindparam("limit"))
    )


async def history_page(
    session: AsyncSession,
    catalog: SchemaCatalog,
    hasher: Hasher,
    query: DsrQuery,
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[HistoryRecord], str | None]:
    """One page in insertion order. Keyset on the insertion sequence: a page never repeats or
    skips an event that existed when the look-up began, whatever is inserted meanwhile."""
    label = f"history\x00{_query_signature(query, hasher)}"
    after = read_cursor(hasher, label, cursor, pointer="/body/cursor") if cursor else 0
    values = match_values(query, hasher) | {"after": after, "limit": limit + 1}
    rows = (await session.execute(_history(match(query)), values)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = sign_cursor(hasher, label, rows[-1].seq) if more else None
    return await records(rows, catalog), next_cursor


async def count_matching(session: AsyncSession, hasher: Hasher, query: DsrQuery) -> int:
    """How many events `query` matches (what an erasure would touch)."""
    counting = select(func.count()).select_from(Event).where(*match(query))
    return int(await session.scalar(counting, match_values(query, hasher)) or 0)


# --- export --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportPlan:
    """What an export will contain: the events matching now, up to `last_seq`."""

    query: DsrQuery
    count: int
    last_seq: int
    audit_id: uuid.UUID


async def count_export(
    connection: AsyncSession | AsyncConnection, hasher: Hasher, query: DsrQuery
) -> tuple[int, int]:
    """How many events an export holds, and the last one's `seq` (0 for none)."""
    count, last_seq = (
        await connection.execute(
            select(func.count(), func.coalesce(func.max(Event.seq), 0)).where(*match(query)),
            match_values(query, hasher),
        )
    ).one()
    return int(count), int(last_seq)


def export_chunks(
    plan: ExportPlan, hasher: Hasher, after: int, size: int
) -> tuple[Select[Any], dict[str, Any]]:
    """The statement of the next chunk of an export, and its parameters."""
    statement = (
        select(*EXPORT_SELECT)
        .where(*match(plan.query), Event.seq > after, Event.seq <= plan.last_seq)
        .order_by(Event.seq)
        .limit(size)
    )
    return statement, match_values(plan.query, hasher)


# --- audit trail ---------------------------------------------------------------------------------


async def audit_page(
    session: AsyncSession, hasher: Hasher, *, limit: int, cursor: str | None
) -> tuple[list[DsrAuditRow], str | None]:
    """Newest first, keyset on the audit sequence."""
    before = read_cursor(hasher, "audit", cursor, pointer="/query/cursor") if cursor else None
    statement = select(DsrAuditRow).order_by(DsrAuditRow.seq.desc()).limit(limit + 1)
    if before is not None:
        statement = statement.where(DsrAuditRow.seq < before)
    rows = list((await session.scalars(statement)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (sign_cursor(hasher, "audit", rows[-1].seq) if more else None)


async def known_property(
    session: AsyncSession | AsyncConnection, property_name: str | None
) -> None:
    """A property that names no property is a mistake to say, not an empty answer: a typo would
    otherwise read as "we hold nothing about this person"."""
    from service.consent_schema.service import property_exists

    if property_name is not None and not await property_exists(session, property_name):
        raise NotFound(f"there is no property named {property_name!r}")

"""Erasure: delete, or clear every identifying column of, a person's events, in the database
function that also writes its audit row (docs/guarantees.md, "Least privilege"), and the tokens
that let a restore apply it again (docs/backup.md)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy import ColumnElement, and_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from service.core.hashing import Hasher, HashKey
from service.dsr.bodies import DsrQuery, ErasureMode, ErasureResult, IdentifierType, identifier_of
from service.dsr.service import (
    audit_hash,
    known_property,
    match,
    match_values,
    searched_hashes,
)
from service.ledger.event import EventType
from service.ledger.tables import ConsentEventRow as Event

# Hashes go as hex: the function stores the audit row's as its 32 bytes (migration 0020).
ERASE = text(
    """
    SELECT consent_erase(
        :mode, :subject_id, :ip_hashes, :user_hashes, :property, :since, :until,
        :audit_id, :actor, :identifier_type, :identifier_hash, :hash_key_id, :reference,
        :request_id, :tokens
    )
    """
)


async def erase_in_one_transaction(
    engine: AsyncEngine,
    hasher: Hasher,
    query: DsrQuery,
    *,
    mode: ErasureMode,
    actor: str,
    reference: str | None,
) -> ErasureResult:
    """`erase` in a transaction of its own, committed when it returns. At READ COMMITTED, the
    level the statistics' delete trigger needs (migration 0010: it locks the roll-up's row, which
    a worker updates every second; at REPEATABLE READ that lock is a serialization failure). So
    a decision stored between the look at the decisions left behind and the erasure is not in
    that look (docs/guarantees.md, "Erasure is complete", names this race)."""
    async with engine.begin() as connection:
        await known_property(connection, query.property)
        return await erase(connection, hasher, query, mode=mode, actor=actor, reference=reference)


async def erase(
    session: AsyncSession | AsyncConnection,
    hasher: Hasher,
    query: DsrQuery,
    *,
    mode: ErasureMode,
    actor: str,
    reference: str | None,
) -> ErasureResult:
    """Erase what `query` matches (`erase_matching`), and with it every consent id's earlier
    events in a property where it matches that consent id's latest decision: kept, the earlier
    decision would become the consent id's state again, a refusal erased bringing back the
    consent it replaced (docs/guarantees.md, "Erasure is complete"). Each such consent id's
    history in that property is an erasure of its own, audited with the same actor and
    reference, and named in `earlier_decisions`; the caller commits all of them at once
    (`erase_in_one_transaction`)."""
    left_behind = await decisions_left_behind(session, hasher, query)
    result = await erase_matching(
        session, hasher, query, mode=mode, actor=actor, reference=reference
    )
    for property_name, subject_id in left_behind:
        earlier = await erase_matching(
            session,
            hasher,
            DsrQuery(subject_id=subject_id, property=property_name),
            mode=mode,
            actor=actor,
            reference=reference,
        )
        result.earlier_decisions.append(earlier.erasure_id)
        result.matched += earlier.matched
        result.deleted += earlier.deleted
        result.anonymised += earlier.anonymised
    return result


async def decisions_left_behind(
    session: AsyncSession | AsyncConnection, hasher: Hasher, query: DsrQuery
) -> dict[tuple[str, uuid.UUID], int]:
    """(property, consent id) of each consent id whose latest decision in a property `query`
    matches while it has earlier decisions there that `query` does not match, and how many.
    None for a consent id's whole history, in one property or all of them."""
    kind, _ = identifier_of(query)
    if kind is IdentifierType.SUBJECT_ID and query.since is None and query.until is None:
        return {}
    return await left_behind_where(session, match(query), match_values(query, hasher))


async def left_behind_where(
    session: AsyncSession | AsyncConnection,
    conditions: Sequence[ColumnElement[bool]],
    values: dict[str, Any],
) -> dict[tuple[str, uuid.UUID], int]:
    """`decisions_left_behind` for the events `conditions` match (with `values` bound): also
    what a restore's re-application of an erasure matches (dsr/journal.py)."""
    pairs = (
        select(Event.property, Event.subject_id)
        .where(*conditions, Event.subject_id.is_not(None))
        .distinct()
        .subquery()
    )
    same_pair = and_(Event.property == pairs.c.property, Event.subject_id == pairs.c.subject_id)
    rows = await session.execute(
        select(
            Event.property, Event.subject_id, Event.seq, Event.event_type,
            and_(*conditions).label("matched"),
        )
        .join(pairs, same_pair)
        .order_by(Event.seq),
        values,
    )  # fmt: skip
    latest: dict[tuple[str, uuid.UUID], bool] = {}  # each pair's latest decision: matched?
    left: dict[tuple[str, uuid.UUID], int] = {}  # the events of a pair the query leaves
    deciding: set[tuple[str, uuid.UUID]] = set()  # pairs that keep a decision
    for row in rows:
        pair = (row.property, row.subject_id)
        decision = row.event_type != EventType.RE_PROMPT.value  # a re-prompt decides nothing
        if decision:
            latest[pair] = bool(row.matched)
        if not row.matched:
            left[pair] = left.get(pair, 0) + 1
            if decision:
                deciding.add(pair)
    return {
        pair: left[pair] for pair, matched in sorted(latest.items()) if matched and pair in deciding
    }


async def erase_matching(
    session: AsyncSession | AsyncConnection,
    hasher: Hasher,
    query: DsrQuery,
    *,
    mode: ErasureMode,
    actor: str,
    reference: str | None,
) -> ErasureResult:
    """Delete, or clear every identifying column of, the matching events, and audit it (the audit
    row's id is the erasure id); the caller commits.

    Both happen inside the database function `consent_erase` (migration 0005): the service's
    role may not change events itself, so no erasure can happen without its audit row
    (docs/guarantees.md, "Least privilege"). Anonymised rows keep their category choices,
    types, versions and times for statistics; what could point back at a person (subject id, IP
    and account hashes, user agent, page URL, IAB strings, the request hash derived from them) is
    cleared. Repeating an erasure matches nothing. The audit row keeps the erasure's tokens
    (`erasure_tokens`), which let a restore re-apply it.
    """
    kind, _ = identifier_of(query)
    hashes = [digest for _, digest in searched_hashes(query, hasher)]
    erasure_id = uuid.uuid4()
    touched = await session.scalar(
        ERASE,
        {
            "mode": mode.value,
            "subject_id": query.subject_id,
            "ip_hashes": hashes if kind is IdentifierType.IP else None,
            "user_hashes": hashes if kind is IdentifierType.USER_ID else None,
            "property": query.property,
            "since": query.since,
            "until": query.until,
            "audit_id": erasure_id,
            "actor": actor,
            "identifier_type": kind.value,
            "identifier_hash": audit_hash(query, hasher),
            "hash_key_id": hasher.current.key_id,
            "reference": reference,
            "request_id": structlog.contextvars.get_contextvars().get("request_id"),
            "tokens": erasure_tokens(query, hasher),
        },
    )
    matched = int(touched or 0)
    return ErasureResult(
        erasure_id=erasure_id,
        mode=mode,
        matched=matched,
        deleted=matched if mode is ErasureMode.DELETE else 0,
        anonymised=matched if mode is ErasureMode.ANONYMISE else 0,
    )


def erasure_token(key: HashKey, kind: IdentifierType, stored: str) -> str:
    """A keyed hash, under a label of its own, of a value as events store it (the subject id, or
    an IP or account hash): equal to nothing stored, and found again only with the key."""
    return key.digest(f"erased-{kind.value}", stored)


def erasure_tokens(query: DsrQuery, hasher: Hasher) -> list[str]:
    """What an erasure's audit row keeps so that a restore of an older backup can find the same
    records and erase them again (docs/backup.md): a token of each value the erasure matches,
    under the current key."""
    kind, _ = identifier_of(query)
    stored = (
        [str(query.subject_id)]
        if kind is IdentifierType.SUBJECT_ID
        else [digest for _, digest in searched_hashes(query, hasher)]
    )
    return [erasure_token(hasher.current, kind, value) for value in stored]

"""Erasure: delete, or clear every identifying column of, a person's events, in the database
function that also writes its audit row (docs/guarantees.md, "Least privilege"), and the tokens
that let a restore apply it again (docs/backup.md)."""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from service.core.hashing import Hasher, HashKey
from service.dsr.bodies import DsrQuery, ErasureMode, ErasureResult, IdentifierType, identifier_of
from service.dsr.service import audit_hash, searched_hashes

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


async def erase(
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

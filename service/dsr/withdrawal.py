"""Withdrawal in writing: the DSR team records a withdrawal a person sent by email or letter
(docs/policies.md, "Withdrawal in writing").

The `reference` (the DSR ticket) is the withdrawal's idempotency key for the identifier it names:
a retry of the same request (a timeout, a second click, the CLI after the API) records nothing
again and answers the withdrawal recorded first; the same reference and identifier with another
property filter is a `409`. A transaction-scoped advisory lock on the reference makes the check
and the recording one step, so two identical requests at once record once (docs/policies.md,
"Retries")."""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.consent_schema.service import SchemaCatalog
from service.core.errors import ReferenceConflict
from service.core.hashing import Hasher, HashKey
from service.dsr.bodies import (
    DsrAction,
    IdentifierType,
    WithdrawalRequest,
    WithdrawalResult,
    identifier_of,
)
from service.dsr.service import (
    RECORD_SELECT,
    audit_hash,
    match,
    match_values,
    record_audit,
)
from service.dsr.tables import DsrAuditRow
from service.ledger.bodies import ConsentRecord
from service.ledger.event import EventSource, EventType, NewEvent, record
from service.ledger.leaf import attach_leaf
from service.ledger.tables import ConsentEventRow as Event
from service.ledger.writer import batch_json, record_sql

_RECORD = text(record_sql(":batch", ":jws", ":leaves"))
# Waits for a transaction recording the same reference to end; released at COMMIT or ROLLBACK,
# so it holds through a transaction-pooling PgBouncer too (docs/scaling.md, "PgBouncer").
_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
# The withdrawals already recorded under a reference for an identifier (migration 0019's index).
_EARLIER = (
    select(DsrAuditRow.id, DsrAuditRow.property, DsrAuditRow.matched)
    .where(
        DsrAuditRow.action == DsrAction.WITHDRAWAL.value,
        DsrAuditRow.reference == bindparam("reference"),
        DsrAuditRow.identifier_type == bindparam("identifier_type"),
        DsrAuditRow.identifier_hash.in_(bindparam("identifier_hashes", expanding=True)),
    )
    .order_by(DsrAuditRow.seq)
)


def reference_lock(reference: str) -> int:
    """The advisory lock of a withdrawal reference: a signed 64-bit key from its SHA-256, under a
    label of its own (the service's other locks are fixed keys; a collision would only make two
    withdrawals wait for each other)."""
    digest = hashlib.sha256(f"consent-service/withdrawal-reference\x00{reference}".encode())
    return int.from_bytes(digest.digest()[:8], "big", signed=True)


def _audit_hashes(request: WithdrawalRequest, hasher: Hasher) -> list[str]:
    """The audit hash of the request's identifier under every configured key, current and
    previous: a retry after a key rotation still finds the withdrawal it repeats."""
    return [audit_hash(request, hasher, key) for key in hasher.all_keys]


def _request_hash(key: HashKey, withdrawal_id: uuid.UUID, subject_id: Any, prop: str) -> str:
    """The `request_hash` of the `withdraw` a withdrawal records for a subject and property: what
    ties the event to its withdrawal without storing the withdrawal's id in the event."""
    return key.digest("withdrawal", f"{withdrawal_id}/{subject_id}/{prop}")


def _scope(property_name: str | None) -> str:
    return "every property" if property_name is None else f"property {property_name!r}"


async def withdraw(
    session: AsyncSession,
    catalog: SchemaCatalog,
    hasher: Hasher,
    request: WithdrawalRequest,
    *,
    actor: str,
    now: datetime,
) -> tuple[WithdrawalResult, bool]:
    """Record a `withdraw` (source `dsr`, entered by `actor`) for every subject and property with
    a decision matching the request, on each property's current version, with the audit row, in
    the caller's transaction; and whether it is new. A retry of a withdrawal already recorded
    under the same reference for the same identifier and property answers that one, read back
    from the database, and records nothing but its own audit row (`withdrawal-replayed`);
    another property filter is a `ReferenceConflict`."""
    await session.execute(_LOCK, {"key": reference_lock(request.reference)})
    kind, _ = identifier_of(request)
    earlier = (
        await session.execute(
            _EARLIER,
            {
                "reference": request.reference,
                "identifier_type": kind.value,
                "identifier_hashes": _audit_hashes(request, hasher),
            },
        )
    ).all()
    if earlier:
        return await _replay(session, catalog, hasher, request, earlier, actor=actor), False
    return await _record(session, catalog, hasher, request, actor=actor, now=now), True


async def _replay(
    session: AsyncSession,
    catalog: SchemaCatalog,
    hasher: Hasher,
    request: WithdrawalRequest,
    earlier: Sequence[Row[Any]],
    *,
    actor: str,
) -> WithdrawalResult:
    kind, _ = identifier_of(request)
    # Before this was checked two could share a reference (the first is the one a retry meant).
    same = next((row for row in earlier if row.property == request.property), None)
    if same is None:
        first = earlier[0]
        raise ReferenceConflict(
            f"reference {request.reference!r} is already withdrawal {first.id}, for this "
            f"{kind.value} on {_scope(first.property)}; this request asks for "
            f"{_scope(request.property)}. A retry must repeat the request; another withdrawal "
            "needs a reference of its own",
            extra={"withdrawal_id": str(first.id)},
        )
    items = await _recorded(session, catalog, hasher, request, same.id)
    # Answering shows the person's records: audited as a look-up of its own, which records no
    # event and names the reference it repeated (docs/policies.md, "Retries").
    await record_audit(
        session,
        action=DsrAction.WITHDRAWAL_REPLAYED,
        actor=actor,
        query=request,
        hasher=hasher,
        matched=len(items),
        reference=request.reference,
    )
    return WithdrawalResult(withdrawal_id=same.id, withdrawn=same.matched, items=items)


@functools.cache
def _withdrawn_by_dsr(conditions: tuple[ColumnElement[bool], ...]) -> Select[Any]:
    return (
        select(*RECORD_SELECT, Event.request_hash)
        .where(
            *conditions,
            Event.source == EventSource.DSR.value,
            Event.event_type == EventType.WITHDRAW.value,
        )
        .order_by(Event.seq)
    )


async def _recorded(
    session: AsyncSession,
    catalog: SchemaCatalog,
    hasher: Hasher,
    request: WithdrawalRequest,
    withdrawal_id: uuid.UUID,
) -> list[ConsentRecord]:
    """The `withdraw` events withdrawal `withdrawal_id` recorded that are still stored, in the
    order it recorded them: the DSR team's withdrawals matching the request whose request hash is
    this withdrawal's (under any configured key). One erased or anonymised since is not among
    them."""
    statement = _withdrawn_by_dsr(match(request))
    rows = (await session.execute(statement, match_values(request, hasher))).all()
    items = []
    for row in rows:
        ours = {
            _request_hash(key, withdrawal_id, row.subject_id, row.property)
            for key in hasher.all_keys
        }
        if row.request_hash in ours:
            version = await catalog.version(row.property, row.schema_version)
            items.append(
                ConsentRecord.model_validate(
                    record(row, optional=version.optional, ttl_days=version.ttl_days)
                )
            )
    return items


async def _record(
    session: AsyncSession,
    catalog: SchemaCatalog,
    hasher: Hasher,
    request: WithdrawalRequest,
    *,
    actor: str,
    now: datetime,
) -> WithdrawalResult:
    kind, value = identifier_of(request)
    decided = (
        select(Event.subject_id, Event.property)
        .where(
            *match(request),
            Event.subject_id.is_not(None),
            Event.event_type != EventType.RE_PROMPT.value,
        )
        .group_by(Event.subject_id, Event.property)
        .order_by(Event.property, func.min(Event.seq))
    )
    pairs = (await session.execute(decided, match_values(request, hasher))).all()
    withdrawal_id = uuid.uuid4()
    user_hash = hasher.user(value) if kind is IdentifierType.USER_ID else None
    events = []
    for subject_id, property_name in pairs:
        version = await catalog.current(property_name)
        choices = dict(
            sorted(
                (
                    dict.fromkeys(version.required, True) | dict.fromkeys(version.optional, False)
                ).items()
            )
        )
        events.append(
            attach_leaf(
                NewEvent(
                    event_id=uuid.uuid4(),
                    property=property_name,
                    # The driver's own UUID type, as a uuid.UUID (the batch is JSON).
                    subject_id=uuid.UUID(bytes=subject_id.bytes),
                    event_type=EventType.WITHDRAW.value,
                    schema_version=version.version,
                    choices=choices,
                    effective=dict(choices),
                    gpc=False,
                    dnt=False,
                    signals_applied=[],
                    source=EventSource.DSR.value,
                    entered_by=actor,
                    ip_hash=None,
                    # Linked to the account it was asked for, so a later look-up by it finds it.
                    user_hash=user_hash,
                    hash_key_id=hasher.current.key_id if user_hash else None,
                    user_agent=None,
                    page_url=None,
                    tcf_string=None,
                    gpp_string=None,
                    request_hash=_request_hash(
                        hasher.current, withdrawal_id, subject_id, property_name
                    ),
                    recorded_at=now,
                ),
                version.content_hash,
            )
        )
    if events:
        # The database's one way in for events (migration 0016); no receipt: not a banner's batch.
        await session.execute(_RECORD, {"batch": batch_json(events), "jws": None, "leaves": None})
    await record_audit(
        session,
        action=DsrAction.WITHDRAWAL,
        actor=actor,
        query=request,
        hasher=hasher,
        matched=len(events),
        reference=request.reference,
        audit_id=withdrawal_id,
    )
    items = []
    for event in events:
        version = await catalog.version(event.property, event.schema_version)
        items.append(
            ConsentRecord.model_validate(
                record(event, optional=version.optional, ttl_days=version.ttl_days)
            )
        )
    return WithdrawalResult(withdrawal_id=withdrawal_id, withdrawn=len(events), items=items)

"""Withdrawal in writing: the DSR team records a withdrawal a person sent by email or letter
(docs/policies.md, "Withdrawal in writing").

The `reference` (the DSR ticket) is the withdrawal's idempotency key for the identifier it names:
a retry of the same request (a timeout, a second click, the CLI after the API) records nothing
again and answers the withdrawal recorded first; the same reference and identifier with another
property filter is a `409`. A transaction-scoped advisory lock on the reference makes the check
and the recording one step, so two identical requests at once record once (docs/policies.md,
"Retries").

A request is a retry only while the withdrawal's evidence stands. A restore of an older backup
brings the withdrawal's audit row back from the DSR journal but not its `withdraw` events
(docs/backup.md, "Restoring"): sent again under its reference, the withdrawal is recorded again
for each subject and property it covered whose event is gone, under an audit row of its own
(`withdrawal-reentered`). Answering it as a retry would leave the person's withdrawal in writing
unrecorded while the DSR team believes it done."""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.consent_schema.service import SchemaCatalog
from service.core.errors import ReferenceConflict
from service.core.hashing import Hasher
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
from service.dsr.withdrawal_records import Pair, record_withdraws, request_hash, with_receipt
from service.ledger.bodies import RecordedEvent
from service.ledger.event import EventSource, EventType, record
from service.ledger.receipts import ReceiptSigner
from service.ledger.stored_receipts import StoredReceipts, receipt_again
from service.ledger.tables import ConsentEventRow as Event
from service.ledger.tables import event_columns

# Waits for a transaction recording the same reference to end; released at COMMIT or ROLLBACK,
# so it holds through a transaction-pooling PgBouncer too (docs/scaling.md, "PgBouncer").
_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
# The withdrawals already recorded under a reference for an identifier (migration 0019's index).
_EARLIER = (
    select(DsrAuditRow.id, DsrAuditRow.property, DsrAuditRow.matched, DsrAuditRow.created_at)
    .where(
        DsrAuditRow.action == DsrAction.WITHDRAWAL.value,
        DsrAuditRow.reference == bindparam("reference"),
        DsrAuditRow.identifier_type == bindparam("identifier_type"),
        DsrAuditRow.identifier_hash.in_(bindparam("identifier_hashes", expanding=True)),
    )
    .order_by(DsrAuditRow.seq)
)
# The latest decision of each (subject, property), as the state reads it (migration 0017).
_LATEST = text(
    "SELECT subject_id, property, recorded_at FROM consent_latest_decisions("
    "CAST(:subjects AS uuid[]), CAST(:properties AS text[]))"
)


class Recorded(StrEnum):
    """What a withdrawal request did."""

    NEW = "new"  # recorded (201)
    # Recorded again: the withdrawal under its reference had lost `withdraw` events, as a restore
    # of an older backup loses them (201; docs/backup.md, "Restoring").
    REENTERED = "re-entered"
    RETRY = "retry"  # answered with the withdrawal recorded first; nothing recorded (200)


def reference_lock(reference: str) -> int:
    """The advisory lock of a withdrawal reference: a signed 64-bit key from its SHA-256, under a
    label of its own (the service's other locks are fixed keys; a collision would only make two
    withdrawals wait for each other)."""
    digest = hashlib.sha256(f"consent-service/withdrawal-reference\x00{reference}".encode())
    return int.from_bytes(digest.digest()[:8], "big", signed=True)


def _audit_hashes(request: WithdrawalRequest, hasher: Hasher) -> list[str]:
    """The audit hash of the request's identifier under every configured key, current and
    previous, of its one form and as spelled: a retry after a key rotation, or of a withdrawal
    audited before account ids had one form, still finds the withdrawal it repeats."""
    return list(
        dict.fromkeys(
            audit_hash(request, hasher, key, as_given=as_given)
            for key in hasher.all_keys
            for as_given in (False, True)
        )
    )


def _scope(property_name: str | None) -> str:
    return "every property" if property_name is None else f"property {property_name!r}"


async def record_withdrawal(
    session: AsyncSession,
    catalog: SchemaCatalog,
    hasher: Hasher,
    request: WithdrawalRequest,
    *,
    actor: str,
    now: datetime,
    receipts: ReceiptSigner | None = None,
) -> tuple[WithdrawalResult, Recorded]:
    """Record a `withdraw` (source `dsr`, entered by `actor`) for every subject and property with
    a decision matching the request, on each property's current version, with the audit row, in
    the caller's transaction; and what it did. A retry of a withdrawal already recorded under the
    same reference for the same identifier and property answers that one, read back from the
    database, and records nothing but its own audit row (`withdrawal-replayed`), unless events of
    that withdrawal are gone (`_lost`): those are recorded again; another property filter is a
    `ReferenceConflict`. The events recorded share one receipt signed with `receipts` (the
    event writer's signer; None: receipts are off), as a banner's batch does."""
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
    if not earlier:
        withdrawal_id = uuid.uuid4()
        pairs = await _decided(session, hasher, request)
        result = await _record(
            session, catalog, hasher, request, pairs, withdrawal_id=withdrawal_id,
            audit_id=withdrawal_id, action=DsrAction.WITHDRAWAL, receipts=receipts, actor=actor,
            now=now,
        )  # fmt: skip
        return result, Recorded.NEW
    # Before this was checked two could share a reference (the first is the one a retry meant).
    same = [row for row in earlier if row.property == request.property]
    if not same:
        first = earlier[0]
        raise ReferenceConflict(
            f"reference {request.reference!r} is already withdrawal {first.id}, for this "
            f"{kind.value} on {_scope(first.property)}; this request asks for "
            f"{_scope(request.property)}. A retry must repeat the request; another withdrawal "
            "needs a reference of its own",
            extra={"withdrawal_id": str(first.id)},
        )
    withdrawal = same[0]
    stored = await _recorded(session, catalog, hasher, request, [row.id for row in same], receipts)
    items = stored[withdrawal.id]
    if len(items) < withdrawal.matched:  # else all of it stands: a retry, with no more queries
        lost = await _lost(
            session, hasher, request, (i for found in stored.values() for i in found), withdrawal
        )
        if lost:
            # Its events carry the withdrawal's own request hashes, so a retry reads them back
            # as the withdrawal's; the audit row says who entered them again, and when.
            result = await _record(
                session, catalog, hasher, request, lost, withdrawal_id=withdrawal.id,
                audit_id=uuid.uuid4(), action=DsrAction.WITHDRAWAL_REENTERED, receipts=receipts,
                actor=actor, now=now,
            )  # fmt: skip
            return result, Recorded.REENTERED
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
    result = WithdrawalResult(
        withdrawal_id=withdrawal.id, withdrawn=withdrawal.matched, items=items
    )
    return result, Recorded.RETRY


@functools.cache
def _withdrawn_by_dsr(conditions: tuple[ColumnElement[bool], ...]) -> Select[Any]:
    return (
        select(*RECORD_SELECT, *event_columns("request_hash", "salt", "leaf", "receipt"))
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
    withdrawal_ids: Sequence[uuid.UUID],
    receipts: ReceiptSigner | None,
) -> dict[uuid.UUID, list[RecordedEvent]]:
    """The `withdraw` events each of `withdrawal_ids` recorded that are still stored, in the
    order they were recorded, with the receipt each was stored with: the DSR team's withdrawals
    matching the request whose request hash is that withdrawal's (under any configured key). One
    erased or anonymised since is not among them. One stored without a receipt (recorded before
    withdrawals were signed, or signing failed) gets one of its own leaf, as a banner's retry
    does (docs/evidence.md, "Receipts")."""
    statement = _withdrawn_by_dsr(match(request))
    rows = (await session.execute(statement, match_values(request, hasher))).all()
    found: dict[uuid.UUID, list[RecordedEvent]] = {wid: [] for wid in withdrawal_ids}
    kept_receipts = StoredReceipts(await session.connection())
    for row in rows:
        ours = (
            wid
            for wid in withdrawal_ids
            for key in hasher.all_keys
            if row.request_hash == request_hash(key, wid, row.subject_id, row.property)
        )
        withdrawal_id = next(ours, None)
        if withdrawal_id is not None:
            version = await catalog.version(row.property, row.schema_version)
            leaf, salt = (None if v is None else bytes(v) for v in (row.leaf, row.salt))
            kept = await receipt_again(kept_receipts, receipts, row.receipt, leaf, salt)
            stored = record(row, optional=version.optional, ttl_days=version.ttl_days)
            found[withdrawal_id].append(with_receipt(stored, kept))
    return found


@functools.cache
def _decided_pairs(conditions: tuple[ColumnElement[bool], ...]) -> Select[Any]:
    return (
        select(Event.subject_id, Event.property)
        .where(
            *conditions,
            Event.subject_id.is_not(None),
            Event.event_type != EventType.RE_PROMPT.value,
        )
        .group_by(Event.subject_id, Event.property)
        .order_by(Event.property, func.min(Event.seq))
    )


async def _decided(session: AsyncSession, hasher: Hasher, request: WithdrawalRequest) -> list[Pair]:
    """Every subject and property with a decision matching the request, in order of property
    and first decision."""
    statement = _decided_pairs(match(request))
    rows = (await session.execute(statement, match_values(request, hasher))).all()
    return [(row.subject_id, row.property) for row in rows]


async def _lost(
    session: AsyncSession,
    hasher: Hasher,
    request: WithdrawalRequest,
    stored: Iterable[RecordedEvent],
    withdrawal: Row[Any],
) -> list[Pair]:
    """The subjects and properties `withdrawal` covered whose `withdraw` is not stored: each with
    a decision matching the request and none of the withdrawal's events, whose latest decision
    (as the state reads it) is older than the withdrawal, which would still be the person's
    latest word. A pair decided since keeps that decision (a banner's, or a withdrawal under
    another reference). A pair an erasure took whole has no decision left to match; one whose
    newer events a ranged erasure took is recorded again: its state would otherwise read the
    older decision, against the withdrawal in writing."""
    covered = {(str(item.subject_id), item.property) for item in stored}
    pairs = [
        (subject_id, prop)
        for subject_id, prop in await _decided(session, hasher, request)
        if (str(subject_id), prop) not in covered
    ]
    if not pairs:
        return []
    latest = await session.execute(
        _LATEST,
        {"subjects": [subject for subject, _ in pairs], "properties": [p for _, p in pairs]},
    )
    older = {
        (str(row.subject_id), row.property)
        for row in latest
        if row.recorded_at < withdrawal.created_at
    }
    return [(subject_id, prop) for subject_id, prop in pairs if (str(subject_id), prop) in older]


async def _record(
    session: AsyncSession,
    catalog: SchemaCatalog,
    hasher: Hasher,
    request: WithdrawalRequest,
    pairs: Sequence[Pair],
    *,
    withdrawal_id: uuid.UUID,
    audit_id: uuid.UUID,
    action: DsrAction,
    receipts: ReceiptSigner | None,
    actor: str,
    now: datetime,
) -> WithdrawalResult:
    """A `withdraw` for each pair, tied to `withdrawal_id` by its request hash, under one signed
    receipt, and the audit row `audit_id` (the withdrawal's own, or a re-entry's)."""
    kind, value = identifier_of(request)
    items = await record_withdraws(
        session, catalog, pairs, withdrawal_id=withdrawal_id, key=hasher.current,
        user_hash=hasher.user(value) if kind is IdentifierType.USER_ID else None,
        receipts=receipts, actor=actor, now=now,
    )  # fmt: skip
    await record_audit(
        session,
        action=action,
        actor=actor,
        query=request,
        hasher=hasher,
        matched=len(items),
        reference=request.reference,
        audit_id=audit_id,
    )
    return WithdrawalResult(withdrawal_id=withdrawal_id, withdrawn=len(items), items=items)

"""Withdrawal in writing: the DSR team records a withdrawal a person sent by email or letter
(docs/policies.md, "Withdrawal in writing")."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.consent_schema.service import SchemaCatalog
from service.core.hashing import Hasher
from service.dsr.bodies import (
    DsrAction,
    IdentifierType,
    WithdrawalRequest,
    WithdrawalResult,
    identifier_of,
)
from service.dsr.service import match, match_values, record_audit
from service.ledger.bodies import ConsentRecord
from service.ledger.event import EventSource, EventType, NewEvent, record
from service.ledger.leaf import attach_leaf
from service.ledger.tables import ConsentEventRow as Event
from service.ledger.writer import batch_json, record_sql

_RECORD = text(record_sql(":batch", ":jws", ":leaves"))


async def withdraw(
    session: AsyncSession,
    catalog: SchemaCatalog,
    hasher: Hasher,
    request: WithdrawalRequest,
    *,
    actor: str,
    now: datetime,
) -> WithdrawalResult:
    """Record a `withdraw` (source `dsr`, entered by `actor`) for every subject and property with
    a decision matching the request, on each property's current version, with the audit row, in
    the caller's transaction (docs/policies.md, "Withdrawal in writing")."""
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
                    request_hash=hasher.current.digest(
                        "withdrawal", f"{withdrawal_id}/{subject_id}/{property_name}"
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

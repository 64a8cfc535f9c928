"""The `withdraw` events a withdrawal in writing records (docs/policies.md, "Withdrawal in
writing"), stored as the banner's are: through the database's one way in for events (migration
0016), with one signed receipt over the withdrawal's leaves, which each event names
(docs/evidence.md, "Receipts"). So the `201`, a retry and an export show the receipt, as they do
for a banner's event. If signing fails the events are stored without one, as the event writer
stores a batch it could not sign (docs/evidence.md, "Receipts")."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.consent_schema.service import SchemaCatalog
from service.core.hashing import HashKey
from service.core.logging import get_logger
from service.ledger.bodies import RecordedEvent
from service.ledger.event import EventSource, EventType, NewEvent, record
from service.ledger.leaf import attach_leaf
from service.ledger.receipts import Proof, ReceiptSigner
from service.ledger.writer import batch_json, record_sql

log = get_logger("service.dsr.withdrawal")

_RECORD = text(record_sql(":batch", ":jws", ":leaves"))

Pair = tuple[Any, str]  # (subject id, as the driver returns it; property)


def request_hash(key: HashKey, withdrawal_id: uuid.UUID, subject_id: Any, prop: str) -> str:
    """The `request_hash` of the `withdraw` a withdrawal records for a subject and property: what
    ties the event to its withdrawal without storing the withdrawal's id in the event."""
    return key.digest("withdrawal", f"{withdrawal_id}/{subject_id}/{prop}")


def with_receipt(found: dict[str, Any], kept: tuple[str, Proof] | None) -> RecordedEvent:
    """A record (`event.record`'s) with its receipt and its proof in it, or with none."""
    found["receipt"] = found["receipt_proof"] = None
    if kept is not None:
        found["receipt"], found["receipt_proof"] = kept[0], kept[1].body()
    return RecordedEvent.model_validate(found)


def _sign(receipts: ReceiptSigner | None, events: list[NewEvent]) -> tuple[str, list[Proof]] | None:
    """One signature over every leaf of the withdrawal, as the event writer signs a batch, or
    None: receipts are off, or signing failed (the events are stored without one)."""
    if receipts is None:
        return None
    try:
        return receipts.sign_batch([event.leaf for event in events], [e.salt for e in events])
    except Exception as exc:
        log.error("receipt_signing_failed", size=len(events), error=type(exc).__name__)
        return None


async def record_withdraws(
    session: AsyncSession,
    catalog: SchemaCatalog,
    pairs: Sequence[Pair],
    *,
    withdrawal_id: uuid.UUID,
    key: HashKey,
    user_hash: str | None,
    receipts: ReceiptSigner | None,
    actor: str,
    now: datetime,
) -> list[RecordedEvent]:
    """Store a `withdraw` (source `dsr`, entered by `actor`) for each pair, on its property's
    current version, tied to `withdrawal_id` by its request hash (under `key`), linked to the
    account `user_hash` names if any, under one receipt; and their records."""
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
                    hash_key_id=key.key_id if user_hash else None,
                    user_agent=None,
                    page_url=None,
                    tcf_string=None,
                    gpp_string=None,
                    request_hash=request_hash(key, withdrawal_id, subject_id, property_name),
                    recorded_at=now,
                ),
                version.content_hash,
            )
        )
    if not events:
        return []
    signed = _sign(receipts, events)
    jws, leaves = (None, None) if signed is None else (signed[0], b"".join(e.leaf for e in events))
    # Every id is new (uuid4), so every event is stored and names the receipt.
    await session.execute(_RECORD, {"batch": batch_json(events), "jws": jws, "leaves": leaves})
    items = []
    for index, event in enumerate(events):
        version = await catalog.version(event.property, event.schema_version)
        found = record(event, optional=version.optional, ttl_days=version.ttl_days)
        items.append(with_receipt(found, None if signed is None else (signed[0], signed[1][index])))
    return items

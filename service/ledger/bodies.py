"""The record of a consent event as the API shows it: to the banner that sent it, and in DSR
history. Its fields are `event.record`'s, in the same order (a test compares them)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from service.ledger.event import ConsentStatus, EventSource, EventType, Signal


class RecordedSignals(BaseModel):
    gpc: bool = Field(description="A GPC signal was present (Sec-GPC: 1 or the body's gpc).")
    dnt: bool = Field(description="DNT: 1 was sent.")
    applied: list[Signal] = Field(
        description="The signals this schema version honours that were present: they turned "
        "every optional category off in `effective`."
    )


class ConsentRecord(BaseModel):
    """The stored evidence of one event, as returned to the banner and in DSR answers."""

    event_id: uuid.UUID
    subject_id: uuid.UUID | None = Field(description="null only after anonymisation")
    property: str
    event_type: EventType
    schema_version: int
    recorded_at: datetime
    choices: dict[str, bool] = Field(description="What the person asked for.")
    effective: dict[str, bool] = Field(description="What applies after browser signals.")
    signals: RecordedSignals
    source: EventSource = Field(
        description="`banner`: a click; `signal`: a browser signal the policy records as the "
        "person's decision; `dsr`: entered by the DSR team from a request in writing."
    )
    status: ConsentStatus | None = Field(
        description="The state this event establishes; null for re-prompt, which decides nothing."
    )
    expires_at: datetime | None = Field(
        description="When the decision lapses (recorded_at + the version's consent_ttl_days)."
    )


class ReceiptProof(BaseModel):
    """Where the event's leaf sits in the tree whose root its receipt signs (RFC 9162 §2.1)."""

    leaf: str = Field(description="The event's leaf hash (hex): SHA-256(0x00 ‖ canonical record).")
    leaf_index: int = Field(description="Its position among the leaves the receipt signs.")
    tree_size: int = Field(description="How many leaves the receipt signs.")
    path: list[str] = Field(description="The inclusion path to the signed root, nearest first.")
    salt: str = Field(description="The random salt hashed into the leaf (hex).")


class RecordedEvent(ConsentRecord):
    """The record of an event just stored (or stored already), with its signed receipt."""

    receipt: str | None = Field(
        description="A compact JWS (EdDSA) over the Merkle root of the leaves of this event's "
        "group commit, kept with the event (a retry gets the same one); verify it with the keys "
        "at /.well-known/jwks.json (docs/evidence.md). Null for an event stored before the "
        "ledger, or whose receipt could not be signed."
    )
    receipt_proof: ReceiptProof | None = Field(
        description="The path from this event's leaf to the root the receipt signs."
    )

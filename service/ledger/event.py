"""The consent event, defined once: what a stored event holds, what each column is for, and the
record that proves it (docs/architecture.md, "One definition of a consent event").

`NewEvent` is the row the service writes. Each field is a column of `consent_events` and says
which views it belongs to:
- `RECORD`: part of the record the banner gets back (and DSR history returns);
- `EVIDENCE`: exported with the record, to prove where and how the decision was made;
- `IDENTIFYING`: could point back at a person, so anonymisation clears it
  (docs/guarantees.md, "Erasure is complete");
- `LEDGER`: the event's place in the tamper-evident ledger, not part of its leaf
  (docs/evidence.md).
The writer's INSERT, the record, the export columns and the erasure's cleared columns are all
derived from these fields; `tests/ledger/test_definition.py` fails if the table, the migration's
guard, the API model or the export drift from them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import Row

RECORD = "record"
EVIDENCE = "evidence"
IDENTIFYING = "identifying"
LEDGER = "ledger"


class EventType(StrEnum):
    ACCEPT_ALL = "accept-all"
    REJECT_ALL = "reject-all"
    SAVE_SELECTION = "save-selection"
    WITHDRAW = "withdraw"
    RE_PROMPT = "re-prompt"


class ConsentStatus(StrEnum):
    GIVEN = "given"
    PARTIALLY_GIVEN = "partially-given"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    NONE = "none"


class Signal(StrEnum):
    GPC = "gpc"
    DNT = "dnt"


class EventSource(StrEnum):
    """Who made an event: a click on the banner, a browser signal the policy records as the
    person's decision, or the DSR team entering a request sent in writing (docs/policies.md)."""

    BANNER = "banner"
    SIGNAL = "signal"
    DSR = "dsr"


def _roles(*roles: str) -> dict[str, frozenset[str]]:
    return {"roles": frozenset(roles)}


_RECORD = _roles(RECORD)
_EVIDENCE = _roles(EVIDENCE)
_RECORD_IDENTIFYING = _roles(RECORD, IDENTIFYING)
_EVIDENCE_IDENTIFYING = _roles(EVIDENCE, IDENTIFYING)
_IDENTIFYING = _roles(IDENTIFYING)
_LEDGER = _roles(LEDGER)
_LEDGER_IDENTIFYING = _roles(LEDGER, IDENTIFYING)


@dataclass(slots=True)
class NewEvent:
    """One row of consent_events as the service writes it (field names are column names). The
    writer sends a row as its values in this order (migration 0027): a field is added last, never
    between others, so a rolling upgrade's rows from the release before still read right."""

    event_id: uuid.UUID = field(metadata=_RECORD)
    property: str = field(metadata=_RECORD)
    subject_id: uuid.UUID = field(metadata=_RECORD_IDENTIFYING)
    event_type: str = field(metadata=_RECORD)
    schema_version: int = field(metadata=_RECORD)
    choices: dict[str, bool] = field(metadata=_RECORD)
    effective: dict[str, bool] = field(metadata=_RECORD)
    gpc: bool = field(metadata=_RECORD)
    dnt: bool = field(metadata=_RECORD)
    signals_applied: list[str] = field(metadata=_RECORD)
    source: str = field(metadata=_RECORD)
    # The API key id (or `cli`) that entered a DSR event; None for the banner's and signals'.
    entered_by: str | None = field(metadata=_EVIDENCE)
    ip_hash: str | None = field(metadata=_EVIDENCE_IDENTIFYING)
    user_hash: str | None = field(metadata=_EVIDENCE_IDENTIFYING)
    hash_key_id: str | None = field(metadata=_EVIDENCE_IDENTIFYING)
    user_agent: str | None = field(metadata=_EVIDENCE_IDENTIFYING)
    page_url: str | None = field(metadata=_EVIDENCE_IDENTIFYING)
    tcf_string: str | None = field(metadata=_EVIDENCE_IDENTIFYING)
    gpp_string: str | None = field(metadata=_EVIDENCE_IDENTIFYING)
    # SHA-256 of the canonical request, to tell a retry from a different event reusing an id.
    # Derived from the identifiers, so anonymisation clears it; never shown.
    request_hash: str = field(metadata=_IDENTIFYING)
    recorded_at: datetime = field(metadata=_RECORD)
    # Random bytes hashed into the leaf (ledger/leaf.py), so a leaf cannot be matched against a
    # guessed record; anonymisation clears them, and the leaf can then no longer be recomputed.
    salt: bytes = field(default=b"", metadata=_LEDGER_IDENTIFYING)
    # SHA-256 of the identifying columns with the salt (ledger/leaf.py): kept by anonymisation, so
    # the leaf of an anonymised event can still be recomputed from what remains.
    identity: bytes = field(default=b"", metadata=_LEDGER)
    # The RFC 9162 leaf hash of the event's canonical record.
    leaf: bytes = field(default=b"", metadata=_LEDGER)


def _with(role: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields(NewEvent) if role in f.metadata["roles"])


# Columns the database fills in itself: the insertion sequence (the key of DSR pagination), the
# time of an anonymising erasure, and the group commit's stored receipt (ledger/writer.py).
DATABASE_COLUMNS = ("seq", "anonymised_at", "receipt")
WRITTEN_COLUMNS = tuple(f.name for f in fields(NewEvent))
RECORD_COLUMNS = _with(RECORD)
# What an event's leaf is computed over (ledger/leaf.py): the identifying columns through the
# `identity` digest, the others as they are.
LEAF_COLUMNS = tuple(name for name in WRITTEN_COLUMNS if name not in _with(LEDGER))
IDENTITY_COLUMNS = tuple(name for name in LEAF_COLUMNS if name in _with(IDENTIFYING))
RECORD_LEAF_COLUMNS = tuple(name for name in LEAF_COLUMNS if name not in IDENTITY_COLUMNS)
# What an export adds to each record: the evidence columns, and when the row was anonymised.
EXPORT_EVIDENCE_COLUMNS = (*_with(EVIDENCE), "anonymised_at")
IDENTIFYING_COLUMNS = _with(IDENTIFYING)


class RecordColumns(Protocol):
    """What a record is made of: a NewEvent, or a result row with the RECORD columns."""

    @property
    def event_id(self) -> uuid.UUID: ...
    @property
    def subject_id(self) -> uuid.UUID | None: ...
    @property
    def event_type(self) -> str: ...
    @property
    def schema_version(self) -> int: ...
    @property
    def choices(self) -> dict[str, bool]: ...
    @property
    def effective(self) -> dict[str, bool]: ...
    @property
    def gpc(self) -> bool: ...
    @property
    def dnt(self) -> bool: ...
    @property
    def signals_applied(self) -> list[str]: ...
    @property
    def source(self) -> str: ...
    @property
    def recorded_at(self) -> datetime: ...

    property: str  # last: the name hides the builtin decorator below it


def record(
    event: RecordColumns | Row[Any], *, optional: frozenset[str], ttl_days: int
) -> dict[str, Any]:
    """The record of a stored event, in the order and shape of `bodies.ConsentRecord`, from the
    event's RECORD columns and the version it was decided on (its optional categories and the
    choice's lifetime). The hot path serialises it as is; other readers validate it into the
    model. A test checks the two give the same JSON."""
    event_type = EventType(event.event_type)
    status = decision_status(event_type, event.effective, optional)
    return {
        "event_id": event.event_id,
        "subject_id": event.subject_id,
        "property": event.property,
        "event_type": event.event_type,
        "schema_version": event.schema_version,
        "recorded_at": event.recorded_at,
        "choices": event.choices,
        "effective": event.effective,
        "signals": {"gpc": event.gpc, "dnt": event.dnt, "applied": event.signals_applied},
        "source": event.source,
        "status": status.value if status else None,
        "expires_at": expiry(event.recorded_at, ttl_days, event_type),
    }


def decision_status(
    event_type: EventType, effective: dict[str, bool], optional: frozenset[str]
) -> ConsentStatus | None:
    """The state a decision establishes; None for a re-prompt, which decides nothing."""
    if event_type is EventType.RE_PROMPT:
        return None
    if event_type is EventType.WITHDRAW:
        return ConsentStatus.WITHDRAWN
    granted = sum(1 for key in optional if effective.get(key))
    if optional and granted == len(optional):
        return ConsentStatus.GIVEN
    if granted:
        return ConsentStatus.PARTIALLY_GIVEN
    if not optional:
        # Nothing optional to refuse: an acknowledgement of the necessary categories.
        return (
            ConsentStatus.GIVEN if event_type is not EventType.REJECT_ALL else ConsentStatus.REFUSED
        )
    return ConsentStatus.REFUSED


def expiry(recorded_at: datetime, ttl_days: int, event_type: EventType) -> datetime | None:
    if event_type is EventType.RE_PROMPT:
        return None
    return recorded_at + timedelta(days=ttl_days)

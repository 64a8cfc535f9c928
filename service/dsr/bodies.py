"""Request and response bodies of the DSR API. Identifiers travel in bodies, never in URLs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from service.consent_schema.document import PROPERTY_PATTERN
from service.core.hashing import canonical_ip, normalise_account_id
from service.core.json_input import CanonicalUUID, no_nul, one_spelling
from service.core.times import Timestamp
from service.ledger.bodies import ConsentRecord, RecordedEvent


def _an_account(value: str) -> str:
    if not normalise_account_id(value):
        raise ValueError("must not be blank: it holds only white space or invisible characters")
    return value


class IdentifierType(StrEnum):
    SUBJECT_ID = "subject_id"
    IP = "ip"
    USER_ID = "user_id"


class DsrAction(StrEnum):
    HISTORY = "history"
    EXPORT = "export"
    ERASURE = "erasure"
    WITHDRAWAL = "withdrawal"
    # A retry of a withdrawal (the same reference and request) answered with the one recorded
    # first: nothing recorded again; `matched` is how many of its events it showed
    # (docs/policies.md, "Retries").
    WITHDRAWAL_REPLAYED = "withdrawal-replayed"
    # A withdrawal entered again under its reference after a restore lost its `withdraw` events:
    # `matched` is how many it recorded again (docs/policies.md, "Retries").
    WITHDRAWAL_REENTERED = "withdrawal-reentered"
    # An erasure of another copy of the database applied to this one after a restore
    # (`reference`: that erasure's id; docs/backup.md).
    ERASURE_REAPPLIED = "erasure-reapplied"
    # A run of `consent-service retention purge`: no identifier; `until` is its as-of time
    # (docs/retention.md).
    RETENTION_PURGE = "retention-purge"


class ExportFormat(StrEnum):
    JSON = "json"
    CSV = "csv"
    # W3C DPV consent records in JSON-LD, after ISO/IEC TS 27560 (docs/dpv.md).
    DPV = "dpv"


class ErasureMode(StrEnum):
    DELETE = "delete"
    ANONYMISE = "anonymise"


class DsrQuery(BaseModel):
    """Exactly one identifier, optionally narrowed by property and time (`since` ≤ t < `until`)."""

    model_config = ConfigDict(extra="forbid")

    subject_id: CanonicalUUID | None = Field(
        default=None, description="The id in the person's consent cookie."
    )
    ip: str | None = Field(
        default=None,
        max_length=64,
        description="An IP address; matched under every configured hash key, current and previous.",
    )
    user_id: (
        Annotated[
            str,
            StringConstraints(min_length=1, max_length=256),
            AfterValidator(no_nul),
            AfterValidator(_an_account),
        ]
        | None
    ) = Field(
        default=None,
        description="An account id. White space and invisible formatting characters around it "
        "and Unicode's composition do not count: `alice ` finds what a banner sent as `alice`. "
        "Events stored before 2026-12-01 are found under the spelling their banner sent.",
    )
    property: Annotated[str, StringConstraints(pattern=PROPERTY_PATTERN)] | None = None
    since: Timestamp | None = None
    until: Timestamp | None = None

    @field_validator("since", "until")
    @classmethod
    def _in_range(cls, value: datetime | None) -> datetime | None:
        # Year 1 an hour east of UTC is year 0 in UTC: neither Python nor PostgreSQL has it.
        if value is not None:
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise ValueError("is out of range (years 1 to 9999 in UTC)") from None
        return value

    @field_validator("ip")
    @classmethod
    def _valid_ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value != value.strip():
            raise ValueError("must not begin or end with white space")
        if canonical_ip(value) is None:
            raise ValueError("not an IPv4 or IPv6 address")
        return value

    # The identifiers a request of this kind may name, as its message lists them.
    IDENTIFIERS: ClassVar[str] = "subject_id, ip or user_id"

    @model_validator(mode="after")
    def _exactly_one_identifier(self) -> Self:
        given = [kind for kind in IdentifierType if getattr(self, kind.value) is not None]
        if len(given) != 1:
            raise ValueError(
                f"name exactly one identifier: {self.IDENTIFIERS}"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must be before until")
        return self


def identifier_of(query: DsrQuery) -> tuple[IdentifierType, str]:
    """The one identifier a query names, and its kind. (Not properties of the model: it has a
    field called `property`.)"""
    for kind in IdentifierType:
        value = getattr(query, kind.value)
        if value is not None:
            return kind, str(value)
    raise AssertionError("validated to name exactly one identifier")


class HistoryRequest(DsrQuery):
    limit: StrictInt = Field(default=100, ge=1, le=1000)
    cursor: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="`next_cursor` of the previous page.",
    )


class HistoryRecord(ConsentRecord):
    """An event as the DSR team sees it: the record, and where and in what browser it was made."""

    page_url: str | None = Field(
        description="The page the banner was on; null if not sent, or after anonymisation."
    )
    user_agent: str | None = Field(
        description="The browser's User-Agent; null if not sent, or after anonymisation."
    )


class HistoryPage(BaseModel):
    items: list[HistoryRecord]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class ExportRequest(DsrQuery):
    format: ExportFormat = ExportFormat.JSON


# A DSR ticket: it names an erasure in the audit, and a withdrawal by it (its idempotency key).
Reference = Annotated[str, StringConstraints(max_length=200), AfterValidator(one_spelling)]


class ErasureRequest(DsrQuery):
    mode: ErasureMode = ErasureMode.DELETE
    reference: Reference | None = Field(
        default=None, description="The DSR ticket this erasure answers."
    )


class ErasurePreview(BaseModel):
    """What an erasure of the same request would erase now, counted without erasing."""

    matched: int = Field(description="Events the request matches.")
    earlier_decisions: int = Field(
        description="Events that would go with them: the other events, in a property, of each "
        "consent id whose latest decision there the request matches."
    )
    consent_ids_with_earlier_decisions: int
    total: int = Field(description="`matched` and `earlier_decisions`: the erasure's `matched`.")


class ErasureResult(BaseModel):
    erasure_id: uuid.UUID
    mode: ErasureMode
    matched: int = Field(description="Events erased, `earlier_decisions`' included.")
    deleted: int
    anonymised: int
    earlier_decisions: list[uuid.UUID] = Field(
        default_factory=list,
        description="Erasures made with this one, each of a consent id's whole history in a "
        "property where this erasure matched that consent id's latest decision: kept, an "
        "earlier decision would have become its state again. Audited with the same actor and "
        "reference.",
    )


class WithdrawalRequest(DsrQuery):
    """A withdrawal a person sent in writing (an email, a letter): by subject id or account id.
    Not by IP address: an address is shared, and a withdrawal for everyone behind it would be
    false evidence."""

    IDENTIFIERS: ClassVar[str] = "subject_id or user_id"

    reference: Reference = Field(
        min_length=1,
        description="The DSR ticket: where the request in writing is kept. With the identifier, "
        "it names the withdrawal: sent again with the same identifier and `property`, the "
        "withdrawal recorded first is answered (`200`) and nothing is recorded again; with "
        "another `property`, `409` `reference-conflict`.",
    )

    @model_validator(mode="after")
    def _not_by_address(self) -> Self:
        if self.ip is not None:
            raise ValueError(
                "a withdrawal names subject_id or user_id, not ip: an address is shared, and a "
                "withdrawal for everyone behind it would be false evidence"
            )
        if self.since is not None or self.until is not None:
            raise ValueError("a withdrawal applies to every decision: no since or until")
        return self


class WithdrawalResult(BaseModel):
    withdrawal_id: uuid.UUID = Field(
        description="The audit entry's id (on a retry, or a re-entry after a restore lost its "
        "events: that of the withdrawal recorded first)."
    )
    withdrawn: int = Field(description="How many subject and property pairs were withdrawn.")
    items: list[RecordedEvent] = Field(
        description="The `withdraw` events recorded: one per subject and property that had a "
        "decision matching the identifier (source `dsr`), each with the signed receipt the "
        "withdrawal's events share and its path in it, as a banner's event has. On a retry, "
        "those still stored, read back with their receipt (one erased since is not listed); on a "
        "re-entry, those recorded again."
    )


class AuditEntry(BaseModel):
    id: uuid.UUID
    action: DsrAction
    actor: str = Field(description="The API key id, or `cli`.")
    identifier_type: IdentifierType | None = Field(
        description="Null for a retention purge, which names no one."
    )
    identifier_hash: str | None = Field(
        description="Keyed hash of the identifier (never the identifier); null for a purge."
    )
    hash_key_id: str
    property: str | None
    since: datetime | None
    until: datetime | None
    mode: ErasureMode | None
    reference: str | None
    matched: int
    deleted: int
    anonymised: int
    request_id: str | None
    created_at: datetime


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None

"""Request and response bodies of the banner API: the event a banner sends, and a subject's state.
(The stored record the banner gets back is the ledger's `ConsentRecord`.)"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    field_validator,
)

from service.banner.page_url import origin_and_path
from service.core.hashing import Hasher, HashKey
from service.core.json_input import UNPRINTABLE, CanonicalUUID, no_nul
from service.ledger.event import ConsentStatus, EventSource, EventType, Signal

IAB_STRING_MAX = 8192
PAGE_URL_MAX = 2048
USER_ID_MAX = 256

CategoryKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
# Text that is stored: PostgreSQL cannot hold NUL, so it is refused here, naming the field. The
# length is checked first, as a string's ("at most 8192 characters", not "items").
IABString = Annotated[str, StringConstraints(max_length=IAB_STRING_MAX), AfterValidator(no_nul)]

_NOT_HASHED = {"event_id"}


class ConsentEventIn(BaseModel):
    """A banner's report of one decision (or of showing the banner again)."""

    model_config = ConfigDict(extra="forbid")

    event_id: CanonicalUUID | None = Field(
        default=None,
        description="Chosen by the client for safe retries: the same id and body return the "
        "original record (200); the same id with another body is a 409.",
    )
    subject_id: CanonicalUUID = Field(description="The random id the banner keeps in its cookie.")
    event_type: EventType
    schema_version: StrictInt = Field(ge=1, le=2_147_483_647)
    categories: dict[CategoryKey, StrictBool] | None = Field(
        default=None,
        description="Per-category choices. Required for save-selection; for accept-all, "
        "reject-all and withdraw optional but must agree with the type; absent for re-prompt.",
    )
    user_id: (
        Annotated[
            str, StringConstraints(min_length=1, max_length=USER_ID_MAX), AfterValidator(no_nul)
        ]
        | None
    ) = Field(
        default=None,
        description="Account id; stored only as a keyed hash, of its one form: Unicode's "
        "composition and white space or invisible formatting characters around it do not count "
        "(`alice ` is `alice`; an id of nothing else is no account id).",
    )
    page_url: Annotated[str, StringConstraints(max_length=PAGE_URL_MAX)] | None = Field(
        default=None, description="Stored as origin and path only (query and fragment dropped)."
    )
    gpc: StrictBool | None = Field(
        default=None, description="navigator.globalPrivacyControl as the banner saw it."
    )
    dnt: StrictBool | None = Field(
        default=None,
        description='navigator.doNotTrack === "1" as the banner saw it (a `DNT: 1` header counts '
        "too).",
    )
    # The values as text, so a refusal names them as the client wrote them ("'banner' or
    # 'signal'"), not as Python's enum members.
    source: Literal["banner", "signal"] | None = Field(
        default=None,
        description="`banner` (the default): a click. `signal`: a `reject-all` the browser client "
        "records because a signal is present that the schema version records as a decision "
        "(`signals.gpc: record`).",
    )
    tcf_string: IABString | None = None
    gpp_string: IABString | None = None

    @field_validator("page_url")
    @classmethod
    def _origin_and_path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        no_nul(value)
        kept = origin_and_path(value)
        if UNPRINTABLE.search(kept):
            # A browser's `location.href` percent-encodes these; raw, they would hide or reorder
            # what a person reading an export sees (U+202E turns text around).
            raise ValueError("must not contain control or invisible formatting characters")
        return kept

    @field_validator("categories")
    @classmethod
    def _sorted(cls, value: dict[str, bool] | None) -> dict[str, bool] | None:
        # One order for one meaning: a retry may list the same choices in another order.
        return dict(sorted(value.items())) if value else value

    def request_hash(self, property_name: str, key: HashKey) -> str:
        """A keyed hash (`HashKey.mac`) of what the event says (its id aside), to tell a retry
        from a different event reusing an id. Keyed, because the body holds the `user_id` in
        clear and every other field of it is stored: a plain hash would give the account id back
        to anyone with a dump who tries candidates (docs/guarantees.md, "No raw IP address is
        stored or logged").
        Fields serialise in declaration order and categories sorted, so equal requests hash
        equally however their JSON was laid out. (`model_dump_json`'s serializer, called
        directly: the same bytes without its per-call argument handling, 2 µs.)"""
        return key.mac("request", self._hashed(property_name))

    def request_hashes(self, property_name: str, hasher: Hasher) -> frozenset[str]:
        """Every hash a stored original of this request may carry: under each configured key,
        current and previous (a retry across a key rotation), and the plain SHA-256 that events
        recorded before request hashes were keyed (2026-11-30) carry."""
        hashed = self._hashed(property_name)
        return frozenset(
            (
                *(key.mac("request", hashed) for key in hasher.all_keys),
                hashlib.sha256(hashed).hexdigest(),
            )
        )

    def _hashed(self, property_name: str) -> bytes:
        body = self.__pydantic_serializer__.to_json(self, exclude_none=True, exclude=_NOT_HASHED)
        return property_name.encode() + b"\x00" + body


class RepromptReason(StrEnum):
    NO_DECISION = "no-decision"
    EXPIRED = "expired"
    SCHEMA_CHANGED = "schema-changed"


class ConsentState(BaseModel):
    property: str
    subject_id: uuid.UUID
    status: ConsentStatus = Field(
        description="From the latest decision with this request's signals applied (a decision "
        "that gave consent reads `refused` while an honoured signal is present); `none` without "
        "one, or `refused` while a signal the current version records as a decision is present "
        "(the banner does not ask; the client records that refusal)."
    )
    event_type: EventType | None = Field(
        description="The latest decision's event type (null without one)."
    )
    source: EventSource | None = Field(
        description="Who made the latest decision: `banner`, `signal` or `dsr` (null without one)."
    )
    choices: dict[str, bool] | None = Field(
        description="The latest decision's choices as the person made them (null without one). "
        "Signals never change them."
    )
    effective: dict[str, bool] = Field(
        description="What applies now: `choices` with this request's honoured signals applied "
        "(every optional category off while one is present). With no valid decision (none, "
        "expired), and while a material change asks again (`schema-changed`), only the current "
        "version's required categories are on."
    )
    signals_applied: list[Signal] = Field(
        description="The signals of this request (`Sec-GPC: 1`, `DNT: 1`, or `?gpc=true`, "
        "`?dnt=true`) that the current version's policy honours."
    )
    schema_version: int | None = Field(description="The version the latest decision was made on.")
    current_version: int
    last_material_version: int
    decided_at: datetime | None
    expires_at: datetime | None
    needs_reprompt: bool
    reprompt_reasons: list[RepromptReason]

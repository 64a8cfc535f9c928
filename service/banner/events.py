"""What a consent event means: the request, its validation against the version the banner showed,
the browser signals, and the stored record that proves it (SPEC §4)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from service.core.errors import Unprocessable

USER_AGENT_MAX = 512
IAB_STRING_MAX = 8192
PAGE_URL_MAX = 2048
USER_ID_MAX = 256


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


CategoryKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class ConsentEventIn(BaseModel):
    """A banner's report of one decision (or of showing the banner again)."""

    model_config = ConfigDict(extra="forbid")

    event_id: uuid.UUID | None = Field(
        default=None,
        description="Chosen by the client for safe retries: the same id and body return the "
        "original record (200); the same id with another body is a 409.",
    )
    subject_id: uuid.UUID = Field(description="The random id the banner keeps in its cookie.")
    event_type: EventType
    schema_version: int = Field(ge=1, le=2_147_483_647)
    categories: dict[CategoryKey, bool] | None = Field(
        default=None,
        description="Per-category choices. Required for save-selection; for accept-all, "
        "reject-all and withdraw optional but must agree with the type; absent for re-prompt.",
    )
    user_id: Annotated[str, StringConstraints(min_length=1, max_length=USER_ID_MAX)] | None = Field(
        default=None, description="Account id; stored only as a keyed hash."
    )
    page_url: Annotated[str, StringConstraints(max_length=PAGE_URL_MAX)] | None = Field(
        default=None, description="Stored as origin and path only (query and fragment dropped)."
    )
    gpc: bool | None = Field(
        default=None, description="navigator.globalPrivacyControl as the banner saw it."
    )
    tcf_string: Annotated[str, StringConstraints(max_length=IAB_STRING_MAX)] | None = None
    gpp_string: Annotated[str, StringConstraints(max_length=IAB_STRING_MAX)] | None = None

    @field_validator("page_url")
    @classmethod
    def _origin_and_path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        host = parts.hostname or ""
        if ":" in host:  # an IPv6 literal keeps its brackets
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        # Credentials, query and fragment are dropped: they routinely carry personal data.
        return f"{parts.scheme}://{host}{port}{parts.path or '/'}"

    @field_validator("categories")
    @classmethod
    def _sorted(cls, value: dict[str, bool] | None) -> dict[str, bool] | None:
        # One order for one meaning: a retry may list the same choices in another order.
        return dict(sorted(value.items())) if value else value

    def request_hash(self, property_name: str) -> str:
        """SHA-256 of what the event says (its id aside), to tell a retry from a different event
        reusing an id. Fields serialise in declaration order and categories sorted, so equal
        requests hash equally however their JSON was laid out."""
        body = self.model_dump_json(exclude_none=True, exclude={"event_id"})
        return hashlib.sha256(f"{property_name}\x00{body}".encode()).hexdigest()


class Signals(BaseModel):
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
    signals: Signals
    status: ConsentStatus | None = Field(
        description="The state this event establishes; null for re-prompt, which decides nothing."
    )
    expires_at: datetime | None = Field(
        description="When the decision lapses (recorded_at + the version's consent_ttl_days)."
    )


def resolve_choices(
    event: ConsentEventIn, *, required: frozenset[str], optional: frozenset[str]
) -> dict[str, bool]:
    """The requested choice per category, checked against the version the banner showed.

    Raises Unprocessable naming every offending category.
    """
    given = event.categories
    errors: list[tuple[str, str]] = []
    if given is not None:
        known = required | optional
        errors += [
            (key, "unknown category in this schema version") for key in given if key not in known
        ]
        errors += [
            (key, "a required category cannot be refused")
            for key in sorted(required)
            if given.get(key) is False
        ]

    match event.event_type:
        case EventType.RE_PROMPT:
            if given is not None:
                errors.append(
                    ("", "re-prompt records that the banner was shown; it takes no categories")
                )
            choices: dict[str, bool] = {}
        case EventType.SAVE_SELECTION:
            if given is None:
                errors.append(("", "save-selection needs categories"))
                given = {}
            choices = dict.fromkeys(required, True) | {
                key: bool(given.get(key, False)) for key in optional
            }
        case EventType.ACCEPT_ALL:
            choices = dict.fromkeys(required | optional, True)
            errors += [
                (key, "accept-all turns every category on")
                for key, value in (given or {}).items()
                if value is False and key in optional
            ]
        case EventType.REJECT_ALL | EventType.WITHDRAW:
            choices = dict.fromkeys(required, True) | dict.fromkeys(optional, False)
            errors += [
                (key, f"{event.event_type.value} turns every optional category off")
                for key, value in (given or {}).items()
                if value is True and key in optional
            ]
    if errors:
        raise Unprocessable(
            "; ".join(
                f"categories.{key}: {message}" if key else f"categories: {message}"
                for key, message in errors
            ),
            extra={
                "errors": [
                    {
                        "pointer": f"/body/categories/{key}" if key else "/body/categories",
                        "detail": m,
                    }
                    for key, m in errors
                ]
            },
        )
    return dict(sorted(choices.items()))


def apply_signals(
    choices: dict[str, bool], *, optional: frozenset[str], applied: list[Signal]
) -> dict[str, bool]:
    """Effective choices: an honoured signal turns every optional category off."""
    if not applied:
        return dict(choices)
    return {key: (False if key in optional else value) for key, value in choices.items()}


def decision_status(
    event_type: EventType, effective: dict[str, bool], optional: frozenset[str]
) -> ConsentStatus | None:
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


def cap(value: str | None, limit: int) -> str | None:
    return None if value is None else value[:limit]


def record_from_row(row: Any, *, optional: frozenset[str], ttl_days: int) -> ConsentRecord:
    """The record of a stored row (a ConsentEventRow or a SQL result row with its columns)."""
    event_type = EventType(row.event_type)
    return ConsentRecord(
        event_id=row.event_id,
        subject_id=row.subject_id,
        property=row.property,
        event_type=event_type,
        schema_version=row.schema_version,
        recorded_at=row.recorded_at,
        choices=row.choices,
        effective=row.effective,
        signals=Signals(gpc=row.gpc, dnt=row.dnt, applied=[Signal(s) for s in row.signals_applied]),
        status=decision_status(event_type, row.effective, optional),
        expires_at=expiry(row.recorded_at, ttl_days, event_type),
    )

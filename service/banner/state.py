"""A subject's current consent on a property, derived from its latest decision."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from enum import StrEnum

import asyncpg
from pydantic import BaseModel, Field

from service.banner.events import ConsentStatus, EventType, decision_status, expiry
from service.consent_schema.versions import PropertyState, PublishedVersion, SchemaCatalog


class RepromptReason(StrEnum):
    NO_DECISION = "no-decision"
    EXPIRED = "expired"
    SCHEMA_CHANGED = "schema-changed"


class ConsentState(BaseModel):
    property: str
    subject_id: uuid.UUID
    status: ConsentStatus
    effective: dict[str, bool] = Field(
        description="What applies now. With no valid decision (none, expired) only the "
        "required categories are on."
    )
    schema_version: int | None = Field(description="The version the latest decision was made on.")
    current_version: int
    last_material_version: int
    decided_at: datetime | None
    expires_at: datetime | None
    needs_reprompt: bool
    reprompt_reasons: list[RepromptReason]


LATEST_DECISION = """
    SELECT event_type, schema_version, effective::text AS effective, recorded_at
    FROM consent_events
    WHERE subject_id = $1 AND property = $2 AND event_type <> 're-prompt'
    ORDER BY seq DESC
    LIMIT 1
"""


def _required_only(version: PublishedVersion) -> dict[str, bool]:
    return {c["key"]: bool(c["required"]) for c in version.content["categories"]}


async def current_state(
    pool: asyncpg.Pool,
    catalog: SchemaCatalog,
    property_name: str,
    subject_id: uuid.UUID,
    now: datetime,
) -> ConsentState:
    prop: PropertyState = await catalog.state(property_name)
    current = await catalog.version(property_name, prop.current_version)
    latest = await pool.fetchrow(LATEST_DECISION, subject_id, property_name)
    if latest is None:
        return ConsentState(
            property=property_name,
            subject_id=subject_id,
            status=ConsentStatus.NONE,
            effective=_required_only(current),
            schema_version=None,
            current_version=prop.current_version,
            last_material_version=prop.last_material_version,
            decided_at=None,
            expires_at=None,
            needs_reprompt=True,
            reprompt_reasons=[RepromptReason.NO_DECISION],
        )
    decided_on = await catalog.version(property_name, latest["schema_version"])
    event_type = EventType(latest["event_type"])
    expires_at = expiry(latest["recorded_at"], decided_on.ttl_days, event_type)
    decided: dict[str, bool] = json.loads(latest["effective"])
    status = decision_status(event_type, decided, decided_on.optional)
    assert status is not None  # re-prompts are not decisions
    effective = decided
    reasons: list[RepromptReason] = []
    if expires_at is not None and now >= expires_at:
        status = ConsentStatus.EXPIRED
        effective = _required_only(current)
        reasons.append(RepromptReason.EXPIRED)
    if latest["schema_version"] < prop.last_material_version:
        reasons.append(RepromptReason.SCHEMA_CHANGED)
    return ConsentState(
        property=property_name,
        subject_id=subject_id,
        status=status,
        effective=effective,
        schema_version=latest["schema_version"],
        current_version=prop.current_version,
        last_material_version=prop.last_material_version,
        decided_at=latest["recorded_at"],
        expires_at=expires_at,
        needs_reprompt=bool(reasons),
        reprompt_reasons=reasons,
    )

"""What the statistics API answers."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field

EVENT_TYPES = ("accept-all", "reject-all", "save-selection", "withdraw", "re-prompt")
# An event of these types is a decision, whatever made it (banner, signal, DSR team).
DECISION_TYPES = EVENT_TYPES[:4]


class CategoryCounts(BaseModel):
    granted: int = Field(description="Decisions whose effective choice (signals applied) is on.")
    denied: int = Field(description="Decisions whose effective choice is off.")


class SignalCounts(BaseModel):
    gpc: int = Field(description="Events that carried Global Privacy Control.")
    dnt: int = Field(description="Events that carried Do Not Track.")


class StatsItem(BaseModel):
    day: date = Field(description="The UTC calendar day.")
    schema_version: int
    events: dict[str, int] = Field(description="Events of each type (all five, zeros included).")
    decisions: int = Field(description="Events of the four decision types.")
    categories: dict[str, CategoryCounts] = Field(
        description="Per optional category of the version, over decisions."
    )
    signals: SignalCounts


class StatsPage(BaseModel):
    property: str
    since: datetime
    until: datetime
    items: list[StatsItem] = Field(description="One per day and schema version with events.")

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, SmallInteger, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base


class StatsHourlyRow(Base):
    """Counts per property, UTC hour, schema version, event type, effective choices and shard,
    kept equal to the stored events by the database's triggers (migration 0009); only the
    database writes it."""

    __tablename__ = "consent_stats_hourly"

    property: Mapped[str] = mapped_column(Text, primary_key=True)
    # The UTC hour the events were recorded in (its first instant).
    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    schema_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_type: Mapped[str] = mapped_column(Text, primary_key=True)
    # The events' effective choices as a whole: a reader sums per category.
    effective: Mapped[dict[str, Any]] = mapped_column(JSONB, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    events: Mapped[int] = mapped_column(BigInteger)
    gpc: Mapped[int] = mapped_column(BigInteger)
    dnt: Mapped[int] = mapped_column(BigInteger)

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import BigInteger, Date, Integer, SmallInteger, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base


class StatsDailyRow(Base):
    """Counts per property, UTC day, schema version, event type, effective choices and shard,
    kept equal to the stored events by the database's triggers (migration 0009); only the
    database writes it."""

    __tablename__ = "consent_stats_daily"

    property: Mapped[str] = mapped_column(Text, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    schema_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_type: Mapped[str] = mapped_column(Text, primary_key=True)
    # The events' effective choices as a whole: a reader sums per category.
    effective: Mapped[dict[str, Any]] = mapped_column(JSONB, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    events: Mapped[int] = mapped_column(BigInteger)
    gpc: Mapped[int] = mapped_column(BigInteger)
    dnt: Mapped[int] = mapped_column(BigInteger)

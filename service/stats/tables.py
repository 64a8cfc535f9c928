from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Date, DateTime, Integer, SmallInteger, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base


class _Counts:
    """Counts per property, time bucket, schema version, event type, effective choices and shard,
    kept equal to the stored events by the database's triggers (migration 0009); only the
    database writes them."""

    property: Mapped[str] = mapped_column(Text, primary_key=True)
    schema_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_type: Mapped[str] = mapped_column(Text, primary_key=True)
    # The events' effective choices as a whole: a reader sums per category.
    effective: Mapped[dict[str, Any]] = mapped_column(JSONB, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    events: Mapped[int] = mapped_column(BigInteger)
    gpc: Mapped[int] = mapped_column(BigInteger)
    dnt: Mapped[int] = mapped_column(BigInteger)


class StatsDailyRow(_Counts, Base):
    __tablename__ = "consent_stats_daily"

    # The UTC calendar day the events were recorded on.
    day: Mapped[date] = mapped_column(Date, primary_key=True)


class StatsHourlyRow(_Counts, Base):
    __tablename__ = "consent_stats_hourly"

    # The UTC hour the events were recorded in (its first instant).
    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Index,
    Integer,
    SmallInteger,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base


class _Counts:
    """Counts per property, time bucket, schema version, event type, effective choices and shard,
    of the events up to the rollup watermark (migrations 0009, 0010); only the
    database writes them. An erasure subtracts in a shard of its own, which the next rollup folds
    into shard 0 (migration 0026)."""

    property: Mapped[str] = mapped_column(Text, primary_key=True)
    schema_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_type: Mapped[str] = mapped_column(Text, primary_key=True)
    # The events' effective choices as a whole: a reader sums per category.
    effective: Mapped[dict[str, Any]] = mapped_column(JSONB, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    events: Mapped[int] = mapped_column(BigInteger)
    gpc: Mapped[int] = mapped_column(BigInteger)
    dnt: Mapped[int] = mapped_column(BigInteger)


def _folding(table: str) -> tuple[Index, Index]:
    """The rows the rollup folds into shard 0, and those it then drops (migration 0026)."""
    return (
        Index(f"{table}_to_fold", "shard", postgresql_where=text("shard <> 0")),
        Index(
            f"{table}_empty", "shard", postgresql_where=text("events = 0 AND gpc = 0 AND dnt = 0")
        ),
    )


class StatsDailyRow(_Counts, Base):
    __tablename__ = "consent_stats_daily"
    __table_args__ = _folding("consent_stats_daily")

    # The UTC calendar day the events were recorded on.
    day: Mapped[date] = mapped_column(Date, primary_key=True)


class StatsHourlyRow(_Counts, Base):
    __tablename__ = "consent_stats_hourly"
    __table_args__ = _folding("consent_stats_hourly")

    # The UTC hour the events were recorded in (its first instant).
    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)


class StatsSealRow(Base):
    """No event with a `seq` at or below `sealed` can still appear (migration 0010). One row;
    only the database's functions write it."""

    __tablename__ = "consent_stats_seal"
    __table_args__ = (CheckConstraint("one", name="consent_stats_seal_one_check"),)

    one: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=text("true"))
    sealed: Mapped[int] = mapped_column(BigInteger)
    sealed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class StatsRollupRow(Base):
    """Which events the two tables hold: those with `seq <= rolled` (migration 0010). One row;
    only the database's functions write it."""

    __tablename__ = "consent_stats_rollup"
    __table_args__ = (CheckConstraint("one", name="consent_stats_rollup_one_check"),)

    one: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=text("true"))
    rolled: Mapped[int] = mapped_column(BigInteger)
    rolled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

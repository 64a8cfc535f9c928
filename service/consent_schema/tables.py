from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base


class PropertyRow(Base):
    """A site or app with its own banner. It comes into being with its first published version."""

    __tablename__ = "consent_properties"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    current_version: Mapped[int] = mapped_column(Integer)
    last_material_version: Mapped[int] = mapped_column(Integer)
    # A version published to take effect later, until it does (or is cancelled).
    pending_version: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SchemaVersionRow(Base):
    """One published consent schema version. Immutable: the database refuses UPDATE and DELETE."""

    __tablename__ = "consent_schema_versions"
    __table_args__ = (
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint(
            "last_material_version BETWEEN 1 AND version", name="last_material_not_after_version"
        ),
        CheckConstraint("NOT material OR last_material_version = version", name="material_is_own"),
    )

    property: Mapped[str] = mapped_column(
        Text, ForeignKey("consent_properties.name"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    content: Mapped[dict[str, Any]] = mapped_column(JSONB)
    content_sha256: Mapped[str] = mapped_column(String(64))
    material: Mapped[bool] = mapped_column(Boolean)
    # The newest material version up to and including this one, fixed at publication.
    last_material_version: Mapped[int] = mapped_column(Integer)
    published_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    published_by: Mapped[str] = mapped_column(Text)
    # When it takes effect; NULL: when it was published.
    effective_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SchemaCancellationRow(Base):
    """A pending version withdrawn before it took effect. Insert-only."""

    __tablename__ = "consent_schema_cancellations"
    __table_args__ = (
        ForeignKeyConstraint(
            ["property", "version"],
            ["consent_schema_versions.property", "consent_schema_versions.version"],
        ),
    )

    property: Mapped[str] = mapped_column(Text, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    cancelled_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    cancelled_by: Mapped[str] = mapped_column(Text)

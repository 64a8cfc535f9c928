from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Identity,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base, HexDigest


class DsrAuditRow(Base):
    """One data-subject-request action (look-up, export, erasure, withdrawal): who, when, on
    what kind of identifier and with what result. The identifier itself is kept only as a keyed
    hash, under a label of its own, so an audit row never matches (or reveals) an event's stored
    hash."""

    __tablename__ = "dsr_audit"
    __table_args__ = (
        # A withdrawal's reference is its idempotency key: the look-up of the withdrawals
        # recorded under one (migration 0019, docs/policies.md "Retries").
        Index(
            "ix_dsr_audit_withdrawal_reference",
            "reference",
            postgresql_where=text("action = 'withdrawal'"),
        ),
        CheckConstraint("octet_length(identifier_hash) = 32", name="identifier_hash"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    action: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text)
    # NULL only for a retention purge, which names no one (migration 0013).
    identifier_type: Mapped[str | None] = mapped_column(Text)
    # Stored as its 32 bytes, as the events' hashes are; read and written as hex, as the API and
    # the DSR journal show it (migration 0020).
    identifier_hash: Mapped[str | None] = mapped_column(HexDigest)
    hash_key_id: Mapped[str] = mapped_column(String(32))
    property: Mapped[str | None] = mapped_column(Text)
    since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    mode: Mapped[str | None] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(Text)
    matched: Mapped[int] = mapped_column(Integer)
    deleted: Mapped[int] = mapped_column(Integer)
    anonymised: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # An erasure's keyed tokens of the values it matched, for a restore to find the same records
    # (migration 0008, docs/backup.md); not shown by the API.
    erasure_tokens: Mapped[list[str] | None] = mapped_column(ARRAY(Text))

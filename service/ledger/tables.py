"""The consent-event table: append-only evidence, written only by `ledger.writer` and erased
only through the DSR erasure path. Its written columns are `event.NewEvent`'s fields.

It is partitioned by month of `recorded_at` (migration 0014, docs/retention.md "Partitions"):
`consent_event_ids` keeps `event_id` unique across the partitions.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Identity,
    Index,
    Integer,
    Interval,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import KeyedColumnElement

from service.core.db import Base, HexDigest

# The monthly partitions and the default one, and their indexes: made by the database (migration
# 0014), not by a model.
PARTITION = re.compile(r"consent_events_(\d{4}_\d{2}|default)\b")


def not_a_partition(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's `include_name`: compare the models with every table but the partitions."""
    return name is None or PARTITION.match(name) is None


class ConsentEventRow(Base):
    """One consent event: append-only evidence.

    The database refuses UPDATE and DELETE except inside the erasure path (a transaction that sets
    `consent.erasure`), and even there an UPDATE may only clear identifying columns.
    """

    __tablename__ = "consent_events"
    __table_args__ = (
        # No foreign key to consent_schema_versions: consent_record_events checks each batch's
        # versions once (migration 0018, docs/retention.md "Idempotency across months").
        CheckConstraint(
            "event_type IN ('accept-all', 'reject-all', 'save-selection', 'withdraw', 're-prompt')",
            name="known_event_type",
        ),
        CheckConstraint("source IN ('banner', 'signal', 'dsr')", name="known_source"),
        CheckConstraint(
            "(source = 'dsr') = (entered_by IS NOT NULL)", name="dsr_entries_name_their_actor"
        ),
        CheckConstraint("octet_length(ip_hash) = 32", name="ip_hash"),
        CheckConstraint("octet_length(user_hash) = 32", name="user_hash"),
        CheckConstraint("octet_length(request_hash) = 32", name="request_hash"),
        Index("ix_consent_events_subject", "subject_id", "seq"),
        Index(
            "ix_consent_events_ip_hash",
            "ip_hash",
            "seq",
            postgresql_where=text("ip_hash IS NOT NULL"),
        ),
        # The parts of days a statistics range starts or ends in (migration 0009).
        Index(
            "ix_consent_events_recorded_at",
            "recorded_at",
            postgresql_using="brin",
            postgresql_with={"autosummarize": "on"},
        ),
        Index(
            "ix_consent_events_user_hash",
            "user_hash",
            "seq",
            postgresql_where=text("user_hash IS NOT NULL"),
        ),
        {"postgresql_partition_by": "RANGE (recorded_at)"},
    )

    # Insertion order: the stable key of DSR pagination. The primary key is (seq, recorded_at):
    # a partitioned table's key must hold the partition key; the sequence alone keeps seq unique.
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    # Unique through consent_event_ids (EventIdRow).
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    property: Mapped[str] = mapped_column(Text)
    # NULL only after an anonymising erasure.
    subject_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    event_type: Mapped[str] = mapped_column(Text)
    schema_version: Mapped[int] = mapped_column(Integer)
    choices: Mapped[dict[str, bool]] = mapped_column(JSONB)
    effective: Mapped[dict[str, bool]] = mapped_column(JSONB)
    gpc: Mapped[bool] = mapped_column(Boolean)
    dnt: Mapped[bool] = mapped_column(Boolean)
    signals_applied: Mapped[list[str]] = mapped_column(JSONB)
    source: Mapped[str] = mapped_column(Text, server_default="banner")
    entered_by: Mapped[str | None] = mapped_column(Text)
    ip_hash: Mapped[str | None] = mapped_column(HexDigest)
    user_hash: Mapped[str | None] = mapped_column(HexDigest)
    hash_key_id: Mapped[str | None] = mapped_column(String(32))
    user_agent: Mapped[str | None] = mapped_column(Text)
    page_url: Mapped[str | None] = mapped_column(Text)
    tcf_string: Mapped[str | None] = mapped_column(Text)
    gpp_string: Mapped[str | None] = mapped_column(Text)
    request_hash: Mapped[str | None] = mapped_column(HexDigest)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    anonymised_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The ledger (migration 0011): NULL only for events stored before it, and `salt` after an
    # anonymising erasure.
    salt: Mapped[bytes | None] = mapped_column(LargeBinary)
    identity: Mapped[bytes | None] = mapped_column(LargeBinary)
    leaf: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The group commit's signed receipt (migration 0012): NULL for events stored before it, or
    # whose receipt could not be signed.
    receipt: Mapped[int | None] = mapped_column(BigInteger)

    def __repr__(self) -> str:  # never print identifiers
        return f"<ConsentEventRow {self.event_id} {self.event_type}>"


class EventIdRow(Base):
    """Every stored event's id, and when it was recorded (the partition it is in): the arbiter of
    idempotency across partitions. The writer inserts here first (ledger/writer.py); a row goes
    only with its event (the delete trigger)."""

    __tablename__ = "consent_event_ids"

    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EventTimeWindowRow(Base):
    """How far from the database's own time an event's `recorded_at` may be: one row, set only by
    the owner; `consent_record_events` refuses a batch outside it (migration 0024,
    docs/guarantees.md "Least privilege")."""

    __tablename__ = "consent_event_time_window"
    __table_args__ = (
        CheckConstraint("only_row", name="only_row"),
        CheckConstraint("tolerance >= interval '0 seconds'", name="tolerance"),
    )

    only_row: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=text("true"))
    tolerance: Mapped[timedelta] = mapped_column(
        Interval, server_default=text("interval '5 minutes'")
    )


def event_columns(*names: str) -> tuple[KeyedColumnElement[Any], ...]:
    """The table's columns of those names, e.g. `event_columns(*RECORD_COLUMNS)` for a select."""
    table = ConsentEventRow.__table__
    return tuple(table.c[name] for name in names)


class LedgerTombstoneRow(Base):
    """The leaf of a deleted event: its seal still verifies; nothing identifies anyone."""

    __tablename__ = "ledger_tombstones"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    leaf: Mapped[bytes] = mapped_column(LargeBinary)
    erased_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    # The dsr_audit id of the erasure that deleted the event (migration 0012; NULL before it).
    erasure: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))


class LedgerAnonymisationRow(Base):
    """An anonymised event and the audited erasure that anonymised it (migration 0025; NULL for
    one anonymised before it)."""

    __tablename__ = "ledger_anonymisations"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    erasure: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    anonymised_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )


class LedgerReceiptRow(Base):
    """A group commit's signed receipt and the leaves of its tree, in order, 32 bytes each
    (docs/evidence.md, "Receipts"), committed in the same statement as its events."""

    __tablename__ = "ledger_receipts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    signed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    jws: Mapped[str] = mapped_column(Text)
    leaves: Mapped[bytes] = mapped_column(LargeBinary)


class LedgerSealRow(Base):
    """The Merkle root of the leaves with `seq` in (first_seq, last_seq], chained to the previous
    seal (docs/evidence.md, "Seals")."""

    __tablename__ = "ledger_seals"
    __table_args__ = (Index("ix_ledger_seals_last_seq", "last_seq"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    tree_size: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[bytes] = mapped_column(LargeBinary)
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary)
    seal_hash: Mapped[bytes] = mapped_column(LargeBinary)
    sealed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# The columns stored as bytes and handled as hex (HexDigest).
HEX_COLUMNS = tuple(
    column.name for column in ConsentEventRow.__table__.c if isinstance(column.type, HexDigest)
)


def input_type(name: str) -> str:
    """The SQL type a written column arrives as in the writer's JSON, as `consent_record_events`
    reads it (migration 0016; hex text for a digest)."""
    if name in HEX_COLUMNS:
        return "text"
    column_type = ConsentEventRow.__table__.c[name].type
    return str(column_type.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]


def stored_value(name: str) -> str:
    """The SQL expression that stores a column of the writer's input (a digest: its bytes), as
    `consent_record_events` does."""
    return f"decode({name}, 'hex')" if name in HEX_COLUMNS else name

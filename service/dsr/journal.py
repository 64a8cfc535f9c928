"""The DSR journal: the audit trail, with each erasure's tokens, as JSON lines a restore can
re-apply (docs/backup.md).

A backup taken before an erasure still holds the erased person's events. Restoring it would bring
them back, so after a restore `reapply` takes the journal of the database that was lost or
replaced and, for every erasure this copy does not know, finds the events it matched by its
tokens (keyed hashes of the matched values: each distinct value stored here is hashed under the
erasure's key and compared) and erases them again within the erasure's property and time range.
Whatever the backup holds that the erasure matched was stored before it, so the set is exact.
Every other audit row missing from this copy is put back as it was, so the trail is whole again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import ColumnElement, Text, cast, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.hashing import Hasher
from service.dsr.bodies import AuditEntry, DsrAction, DsrQuery, IdentifierType
from service.dsr.erasure import erase_matching, erasure_token, left_behind_where
from service.dsr.tables import DsrAuditRow
from service.ledger.tables import ConsentEventRow as Event

JOURNAL_FORMAT = 1


class JournalLine(BaseModel):
    """One audit row and, for an erasure, the events it erased."""

    model_config = ConfigDict(extra="forbid")

    journal: int
    audit: AuditEntry
    erasure_tokens: list[str] = []


async def journal_lines(session: AsyncSession, *, since: datetime | None) -> list[str]:
    """The journal of this database, oldest first, one JSON document per line."""
    statement = select(DsrAuditRow).order_by(DsrAuditRow.seq)
    if since is not None:
        statement = statement.where(DsrAuditRow.created_at >= since)
    return [
        JournalLine(
            journal=JOURNAL_FORMAT,
            audit=AuditEntry.model_validate(row, from_attributes=True),
            erasure_tokens=row.erasure_tokens or [],
        ).model_dump_json()
        for row in (await session.scalars(statement)).all()
    ]


class JournalError(ValueError):
    """A journal file that is not one this service wrote."""


def _hex_digest(value: str | None) -> bool:
    """What this service writes as an audit row's identifier hash, which the table stores as its
    32 bytes (migration 0020): a purge's NULL, or a SHA-256 digest in lower-case hex."""
    return value is None or (len(value) == 64 and set(value) <= set("0123456789abcdef"))


def read_journal(named_lines: Iterable[tuple[str, int, str]]) -> list[JournalLine]:
    """Parse (file, line number, text) triples strictly; the first bad line is an error naming
    where it is. The same audit row in several files (overlapping exports) is taken once."""
    entries: dict[uuid.UUID, JournalLine] = {}
    for name, number, raw in named_lines:
        if not raw.strip():
            continue
        try:
            entry = JournalLine.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = "/".join(str(part) for part in first["loc"])
            detail = f"{where}: {first['msg']}" if where else first["msg"]
            raise JournalError(f"{name}:{number} is not a journal line ({detail})") from None
        if entry.journal != JOURNAL_FORMAT:
            raise JournalError(f"{name}:{number}: journal format {entry.journal} is not known")
        if entry.erasure_tokens and entry.audit.action is not DsrAction.ERASURE:
            raise JournalError(f"{name}:{number}: only an erasure has tokens")
        if not _hex_digest(entry.audit.identifier_hash):
            raise JournalError(
                f"{name}:{number}: audit/identifier_hash is not a SHA-256 digest in lower-case hex"
            )
        entries.setdefault(entry.audit.id, entry)
    return sorted(entries.values(), key=lambda entry: entry.audit.created_at)


@dataclass(slots=True)
class Reapplied:
    """What a re-application did to this copy of the database."""

    erasures: int = 0  # erasures this copy did not know, now applied
    events: int = 0  # events they deleted or anonymised here
    # Consent ids whose earlier decisions went with a re-applied erasure (`earlier_decisions`).
    earlier_decisions: int = 0
    already_here: int = 0  # audit rows (any action) this copy already had
    restored: int = 0  # other audit rows put back
    # References of the withdrawals put back whose events are not here: each is recorded again
    # when re-entered under its reference (dsr/withdrawal.py).
    withdrawals: list[str] = field(default_factory=list)
    # Erasures made before their audit rows kept tokens (migration 0008): their references, to
    # repeat by hand; their rows are not put back, so the trail never claims what is not done.
    untokened: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "erasures_reapplied": self.erasures,
            "events_erased": self.events,
            "consent_ids_with_earlier_decisions": self.earlier_decisions,
            "audit_rows_already_present": self.already_here,
            "audit_rows_restored": self.restored,
            "withdrawals_to_re_enter": self.withdrawals,
            "erasures_to_repeat": self.untokened,
        }


RECORDS_WITHDRAWALS = (DsrAction.WITHDRAWAL, DsrAction.WITHDRAWAL_REENTERED)
REAPPLY = text("SELECT consent_reapply_erasure(CAST(:audit AS jsonb), :values, CAST(:by AS jsonb))")
STORED = {
    IdentifierType.SUBJECT_ID: cast(Event.subject_id, Text),
    IdentifierType.IP: Event.ip_hash,
    IdentifierType.USER_ID: Event.user_hash,
}


class MissingKey(ValueError):
    """An erasure made under a key this process is not configured with."""


async def matched_values(
    session: AsyncSession, hasher: Hasher, erasures: Sequence[JournalLine]
) -> dict[uuid.UUID, list[str]]:
    """For each erasure, the values stored here whose token it lists: one pass over the distinct
    values of each identifier column, hashing each under each key the erasures were made with."""
    keys = {key.key_id: key for key in hasher.all_keys}
    found: dict[uuid.UUID, list[str]] = {entry.audit.id: [] for entry in erasures}
    for kind, column in STORED.items():
        wanted: dict[tuple[str, str], list[uuid.UUID]] = {}
        for entry in erasures:
            if entry.audit.identifier_type is not kind:
                continue
            if entry.audit.hash_key_id not in keys:
                raise MissingKey(
                    f"erasure {entry.audit.id} was made under key {entry.audit.hash_key_id}, "
                    "which is not configured: add it to CONSENT_IP_HASH_PREVIOUS_SALTS"
                )
            for token in entry.erasure_tokens:
                wanted.setdefault((entry.audit.hash_key_id, token), []).append(entry.audit.id)
        if not wanted:
            continue
        key_ids = {key_id for key_id, _ in wanted}
        values = await session.stream_scalars(select(column).where(column.is_not(None)).distinct())
        async for value in values:
            if value is None:
                continue
            for key_id in key_ids:
                token = erasure_token(keys[key_id], kind, value)
                for erasure_id in wanted.get((key_id, token), []):
                    found[erasure_id].append(value)
    return found


async def reapply(
    session: AsyncSession, hasher: Hasher, entries: Sequence[JournalLine], *, actor: str
) -> Reapplied:
    """Bring this copy's audit trail and erasures up to the journal's; the caller commits (or,
    for a dry run, rolls back)."""
    done = Reapplied()
    here = set(
        (
            await session.scalars(
                select(DsrAuditRow.id).where(DsrAuditRow.id.in_([e.audit.id for e in entries]))
            )
        ).all()
    )
    missing = [entry for entry in entries if entry.audit.id not in here]
    done.already_here = len(entries) - len(missing)
    values = await matched_values(
        session, hasher, [e for e in missing if e.audit.action is DsrAction.ERASURE]
    )
    for entry in missing:
        if entry.audit.action is DsrAction.ERASURE and not entry.erasure_tokens:
            done.untokened.append(entry.audit.reference or str(entry.audit.id))
            continue
        if entry.audit.action is DsrAction.ERASURE:
            found = values[entry.audit.id]
            left = await left_behind_where(session, replayed(entry.audit, found), {})
            row = {**entry.audit.model_dump(mode="json"), "erasure_tokens": entry.erasure_tokens}
            touched = await session.scalar(
                REAPPLY,
                {
                    "audit": json.dumps(row),
                    "values": values[entry.audit.id],
                    "by": json.dumps({"id": str(uuid.uuid4()), "actor": actor}),
                },
            )
            done.erasures += 1
            done.events += int(touched or 0)
            await earlier_decisions(session, hasher, entry.audit, left, actor=actor, done=done)
            continue
        await session.execute(insert(DsrAuditRow).values(**entry.audit.model_dump()))
        done.restored += 1
        # A withdrawal (or its re-entry) made after the backup: its events and audit row were
        # one transaction, so the copy holds none of its events. One that matched nothing has
        # nothing to record again.
        if entry.audit.action in RECORDS_WITHDRAWALS and entry.audit.matched:
            reference = entry.audit.reference or str(entry.audit.id)
            if reference not in done.withdrawals:
                done.withdrawals.append(reference)
    return done


def replayed(audit: AuditEntry, found: list[str]) -> list[ColumnElement[bool]]:
    """What `consent_reapply_erasure` erases: the events holding a value found for the erasure,
    within its property and time range (migration 0008)."""
    assert audit.identifier_type is not None  # an erasure names what it matched
    conditions: list[ColumnElement[bool]] = [STORED[audit.identifier_type].in_(found)]
    if audit.property is not None:
        conditions.append(Event.property == audit.property)
    if audit.since is not None:
        conditions.append(Event.recorded_at >= audit.since)
    if audit.until is not None:
        conditions.append(Event.recorded_at < audit.until)
    return conditions


async def earlier_decisions(
    session: AsyncSession,
    hasher: Hasher,
    audit: AuditEntry,
    left: dict[tuple[str, uuid.UUID], int],
    *,
    actor: str,
    done: Reapplied,
) -> None:
    """The erasure rule again, on this copy (docs/guarantees.md, "Erasure is complete"): where
    the re-applied erasure took a consent id's latest decision here but not its earlier ones,
    they go too, an erasure of their own with the original's mode and reference. The copy may
    lack what kept them harmless when the erasure was made (a later decision, lost with the
    restore), so the original's own erasures of earlier decisions are not enough."""
    assert audit.mode is not None  # checked by `consent_reapply_erasure` first
    for property_name, subject_id in left:
        earlier = await erase_matching(
            session,
            hasher,
            DsrQuery(subject_id=subject_id, property=property_name),
            mode=audit.mode,
            actor=actor,
            reference=audit.reference,
        )
        done.earlier_decisions += 1
        done.events += earlier.matched

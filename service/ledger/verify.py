"""`consent-service ledger verify`: recompute every leaf that can be, every seal and the chain
(docs/evidence.md, "Verifying").

Every stored event's leaf is recomputed: from its columns, its schema version's content hash and
its `identity`, which is itself recomputed from the identifying columns and the salt while the
event has them. An anonymised event (no salt) must really be one: `anonymised_at` set, every
identifying column empty; and an event marked anonymised must have lost its salt and every
identifying column. A deleted event leaves only its tombstone, whose leaf counts in its seal's
root like any other, and names the audited erasure that made it; an anonymised event is recorded
with the audited erasure that anonymised it. Every stored receipt is checked
against its leaves and the service's public keys, and an event whose leaf a stored receipt holds
must name that receipt. Every schema version's content is hashed again: the leaves hold the
hash, not the content.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.consent_schema.document import content_hash
from service.ledger import merkle
from service.ledger.event import IDENTIFYING_COLUMNS, IDENTITY_COLUMNS
from service.ledger.leaf import identity_digest, leaf_data
from service.ledger.sealer import Seal
from service.ledger.stored_receipts import ReceiptMismatch, check_receipt
from service.ledger.tables import HEX_COLUMNS

ZERO = bytes(32)

SEALS = text("SELECT * FROM ledger_seals WHERE id >= :since ORDER BY id")
LATEST_SEAL_ID = text("SELECT max(id) FROM ledger_seals")
EVENTS = text(
    """
    SELECT e.*, v.content_sha256 AS content_hash
    FROM consent_events e
    LEFT JOIN consent_schema_versions v
      ON v.property = e.property AND v.version = e.schema_version
    WHERE e.seq > :after AND (CAST(:upto AS bigint) IS NULL OR e.seq <= :upto)
    ORDER BY e.seq
    """
)
TOMBSTONES = text(
    "SELECT seq, leaf FROM ledger_tombstones"
    " WHERE seq > :after AND (CAST(:upto AS bigint) IS NULL OR seq <= :upto) ORDER BY seq"
)


# Every stored receipt, a chunk at a time.
RECEIPTS = text(
    "SELECT id, jws, leaves FROM ledger_receipts WHERE id > :after ORDER BY id LIMIT 1000"
)
# Events whose receipt is missing, or does not hold their leaf at a leaf's offset.
UNRECEIPTED = text(
    """
    SELECT e.event_id, e.seq, e.receipt FROM consent_events e
    LEFT JOIN ledger_receipts r ON r.id = e.receipt
    WHERE e.receipt IS NOT NULL
      AND (r.id IS NULL OR position(e.leaf IN r.leaves) % 32 <> 1)
    ORDER BY e.seq LIMIT 1
    """
)
# Events that name no receipt while a stored receipt holds their leaf: detached from the signed
# batch they were stored in (the writer names the receipt in the statement that stores its events).
DETACHED = text(
    """
    SELECT e.event_id, e.seq, r.id AS receipt
    FROM ledger_receipts r
    CROSS JOIN LATERAL generate_series(0, octet_length(r.leaves) / 32 - 1) AS i
    JOIN consent_events e ON e.leaf = substring(r.leaves FROM i * 32 + 1 FOR 32)
    WHERE e.receipt IS NULL
    ORDER BY e.seq LIMIT 1
    """
)
# Erasures (and retention purges) whose tombstones their audit row does not account for: no such
# erasure, not a deleting one, or more tombstones than it deleted (events stored before the ledger
# leave none).
UNAUDITED = text(
    """
    SELECT t.erasure, count(*) AS tombstones, min(t.seq) AS seq, a.action, a.mode, a.deleted
    FROM ledger_tombstones t LEFT JOIN dsr_audit a ON a.id = t.erasure
    WHERE t.erasure IS NOT NULL
    GROUP BY t.erasure, a.action, a.mode, a.deleted
    HAVING a.action IS NULL OR a.action NOT IN ('erasure', 'erasure-reapplied', 'retention-purge')
        OR a.mode IS DISTINCT FROM 'delete' OR count(*) > a.deleted
    ORDER BY min(t.seq) LIMIT 1
    """
)
UNLINKED = text("SELECT count(*) FROM ledger_tombstones WHERE erasure IS NULL")
# Anonymisations their audit row does not account for: no such erasure, not an anonymising one,
# more events than it anonymised, or made in another transaction than its audit row (both are
# stamped with the transaction's time: an anonymisation claiming an erasure of before 0025, whose
# events name none, is one of these).
UNAUDITED_ANONYMISATIONS = text(
    """
    SELECT n.erasure, count(*) AS events, min(n.seq) AS seq, a.action, a.mode, a.anonymised,
           bool_or(n.anonymised_at IS DISTINCT FROM a.created_at) AS elsewhen
    FROM ledger_anonymisations n LEFT JOIN dsr_audit a ON a.id = n.erasure
    WHERE n.erasure IS NOT NULL
    GROUP BY n.erasure, a.action, a.mode, a.anonymised
    HAVING a.action IS NULL OR a.action NOT IN ('erasure', 'erasure-reapplied')
        OR a.mode IS DISTINCT FROM 'anonymise' OR count(*) > a.anonymised
        OR bool_or(n.anonymised_at IS DISTINCT FROM a.created_at)
    ORDER BY min(n.seq) LIMIT 1
    """
)
# An anonymised event that no anonymisation records: emptied around the database's trigger.
UNRECORDED_ANONYMISATION = text(
    """
    SELECT e.event_id, e.seq FROM consent_events e
    WHERE e.anonymised_at IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM ledger_anonymisations n WHERE n.seq = e.seq)
    ORDER BY e.seq LIMIT 1
    """
)
UNLINKED_ANONYMISATIONS = text("SELECT count(*) FROM ledger_anonymisations WHERE erasure IS NULL")
VERSIONS = text(
    "SELECT property, version, content, content_sha256 FROM consent_schema_versions"
    " ORDER BY property, version"
)


class LedgerBroken(Exception):
    """The first thing that does not match: an event, a seal, or the chain."""


class NoSuchSeal(Exception):
    """`since` is past the latest seal: a mistake in the request, not a sign of tampering (a
    truncated ledger is caught by the head published earlier: docs/evidence.md)."""


@dataclass(slots=True)
class Report:
    seals: int = 0
    leaves: int = 0
    recomputed: int = 0
    anonymised: int = 0
    tombstones: int = 0
    unsealed: int = 0
    receipts: int = 0
    versions: int = 0  # schema versions whose content was hashed again
    # Tombstones made before migration 0012, which name no erasure.
    unlinked: int = 0
    # Events anonymised before migration 0025, which name no erasure.
    unlinked_anonymised: int = 0
    head: dict[str, Any] = field(default_factory=dict)


async def _leaves(
    connection: AsyncConnection, after: int, upto: int | None, report: Report
) -> AsyncIterator[tuple[int, bytes]]:
    """The leaves with seq in (after, upto], in seq order, each event's recomputed first."""
    bounds = {"after": after, "upto": upto}
    events = (await connection.execute(EVENTS, bounds)).mappings().all()
    tombstones = (await connection.execute(TOMBSTONES, bounds)).all()
    merged: list[tuple[int, bytes]] = []
    for row in events:
        name = f"event {row['event_id']} (seq {row['seq']})"
        if row["leaf"] is None:
            raise LedgerBroken(f"{name} has no leaf: it was stored around the ledger")
        if row["content_hash"] is None or row["identity"] is None:
            raise LedgerBroken(f"{name} names no stored schema version, or has no identity")
        columns = dict(row)
        for column in HEX_COLUMNS:  # leaves were computed over the hex the service handles
            if columns[column] is not None:
                columns[column] = bytes(columns[column]).hex()
        if row["anonymised_at"] is not None:
            kept = [column for column in IDENTIFYING_COLUMNS if row[column] is not None]
            if kept:
                raise LedgerBroken(
                    f"{name} is marked anonymised but keeps {', '.join(kept)}: an anonymising"
                    " erasure clears them"
                )
        if row["salt"] is not None:
            if identity_digest(columns, bytes(row["salt"])) != bytes(row["identity"]):
                raise LedgerBroken(f"{name}: its identifying columns changed after it was stored")
        elif row["anonymised_at"] is None or any(
            row[column] is not None for column in IDENTITY_COLUMNS
        ):
            raise LedgerBroken(f"{name} has no salt but is not anonymised")
        else:
            report.anonymised += 1
        data = leaf_data(columns, row["content_hash"], bytes(row["identity"]))
        if merkle.leaf_hash(data) != bytes(row["leaf"]):
            raise LedgerBroken(f"{name} does not match its leaf: it changed after it was stored")
        report.recomputed += 1
        merged.append((row["seq"], bytes(row["leaf"])))
    report.tombstones += len(tombstones)
    merged += [(row.seq, bytes(row.leaf)) for row in tombstones]
    merged.sort()
    for seq, leaf in merged:
        yield seq, leaf


async def verify_receipts(
    connection: AsyncConnection, keys: dict[str, Ed25519PublicKey], report: Report
) -> None:
    """Every stored receipt is signed by a key of the service over the root of its leaves, every
    event's receipt holds its leaf, and no event whose leaf a receipt holds names none."""
    after = 0
    while rows := (await connection.execute(RECEIPTS, {"after": after})).all():
        for row in rows:
            try:
                check_receipt(row.jws, bytes(row.leaves), keys)
            except ReceiptMismatch as exc:
                raise LedgerBroken(f"receipt {row.id}: {exc}") from None
        report.receipts += len(rows)
        after = rows[-1].id
    stray = (await connection.execute(UNRECEIPTED)).one_or_none()
    if stray is not None:
        raise LedgerBroken(
            f"event {stray.event_id} (seq {stray.seq}): receipt {stray.receipt} does not hold its"
            " leaf"
        )
    detached = (await connection.execute(DETACHED)).one_or_none()
    if detached is not None:
        raise LedgerBroken(
            f"event {detached.event_id} (seq {detached.seq}) names no receipt, but receipt"
            f" {detached.receipt} holds its leaf: it was detached from its signed batch"
        )


async def verify_erasures(connection: AsyncConnection, report: Report) -> None:
    """Every tombstone names an audited deleting erasure that accounts for it."""
    found = (await connection.execute(UNAUDITED)).one_or_none()
    if found is not None:
        audit = (
            "no audit row"
            if found.action is None
            else f"an audit row of {found.action} ({found.mode}, {found.deleted} deleted)"
        )
        raise LedgerBroken(
            f"{found.tombstones} tombstone(s) from seq {found.seq} name erasure {found.erasure},"
            f" which has {audit}: events were deleted outside an audited erasure"
        )
    report.unlinked = int((await connection.execute(UNLINKED)).scalar_one())


async def verify_schema_versions(connection: AsyncConnection, report: Report) -> None:
    """Every schema version's content still hashes to its `content_sha256`: the hash each of its
    events' leaves holds, and which its exports name. Otherwise the text a person was shown
    could be rewritten (around the versions' immutability trigger) with every leaf still
    matching."""
    for row in await connection.execute(VERSIONS):
        if content_hash(row.content) != row.content_sha256:
            raise LedgerBroken(
                f"schema version {row.version} of {row.property}: its content does not hash to"
                f" its content_sha256 ({row.content_sha256}): what its events' visitors were"
                " shown was changed after it was published"
            )
        report.versions += 1


async def verify_anonymisations(connection: AsyncConnection, report: Report) -> None:
    """Every anonymised event names an audited anonymising erasure that accounts for it
    (migration 0025). Checked after the events themselves, which name an event marked
    anonymised that still identifies someone."""
    found = (await connection.execute(UNAUDITED_ANONYMISATIONS)).one_or_none()
    if found is not None:
        audit = (
            "no audit row"
            if found.action is None
            else f"an audit row of {found.action} ({found.mode}, {found.anonymised} anonymised"
            + (", written in another transaction)" if found.elsewhen else ")")
        )
        raise LedgerBroken(
            f"{found.events} anonymised event(s) from seq {found.seq} name erasure"
            f" {found.erasure}, which has {audit}: events were anonymised outside an audited"
            " erasure"
        )
    event = (await connection.execute(UNRECORDED_ANONYMISATION)).one_or_none()
    if event is not None:
        raise LedgerBroken(
            f"event {event.event_id} (seq {event.seq}) is anonymised, but no erasure anonymised"
            " it: its identifying columns were emptied outside an audited erasure"
        )
    report.unlinked_anonymised = int(
        (await connection.execute(UNLINKED_ANONYMISATIONS)).scalar_one()
    )


async def verify_ledger(
    connection: AsyncConnection,
    *,
    since: int = 0,
    head: dict[str, Any] | None = None,
    keys: dict[str, Ed25519PublicKey] | None = None,
) -> Report:
    """Raise LedgerBroken at the first mismatch, NoSuchSeal if `since` is past the latest seal;
    the report of what was checked otherwise."""
    if since < 0:
        raise ValueError(f"since must be a seal number (0 or more), not {since}")
    latest = (await connection.execute(LATEST_SEAL_ID)).scalar_one()
    if latest is not None and since > latest:
        raise NoSuchSeal(f"there is no seal from {since} on (the latest is seal {latest})")
    report = Report()
    await verify_schema_versions(connection, report)
    await verify_erasures(connection, report)
    if keys is not None:
        await verify_receipts(connection, keys, report)
    seals = [Seal.from_row(row) for row in (await connection.execute(SEALS, {"since": since}))]
    if not seals:
        raise LedgerBroken(f"there is no seal from {since} on")
    previous: Seal | None = None
    for seal in seals:
        if seal.seal_hash != seal.expected_hash():
            raise LedgerBroken(f"seal {seal.id}: its hash does not match its fields")
        if previous is None:
            if seal.id != since:
                raise LedgerBroken(f"seal {since} is missing (the first found is {seal.id})")
            if seal.id == 0 and (seal.prev_hash != ZERO or seal.tree_size):
                raise LedgerBroken("seal 0 is not a genesis seal")
        elif (
            seal.id != previous.id + 1
            or seal.first_seq != previous.last_seq
            or seal.prev_hash != previous.seal_hash
        ):
            raise LedgerBroken(f"seal {seal.id} does not extend seal {previous.id}")
        if seal.id:
            leaves = [
                leaf async for _, leaf in _leaves(connection, seal.first_seq, seal.last_seq, report)
            ]
            if len(leaves) != seal.tree_size or merkle.root(leaves) != seal.root:
                raise LedgerBroken(
                    f"seal {seal.id}: its root does not match the {len(leaves)} leaves with seq"
                    f" in ({seal.first_seq}, {seal.last_seq}] (it sealed {seal.tree_size})"
                )
            report.leaves += len(leaves)
        report.seals += 1
        previous = seal
    assert previous is not None
    # What is stored but not sealed yet is checked too.
    tail = Report()
    report.unsealed = len(
        [leaf async for leaf in _leaves(connection, previous.last_seq, None, tail)]
    )
    report.head = previous.head()
    await verify_anonymisations(connection, report)
    if head is not None:
        published = int(head["seal"])
        found = next((seal for seal in seals if seal.id == published), None)
        if found is None:
            raise LedgerBroken(
                f"the ledger no longer holds seal {published} published earlier (its seals now"
                f" run {seals[0].id} to {previous.id})"
            )
        if found.seal_hash.hex() != head["seal_hash"]:
            raise LedgerBroken(f"seal {published} is not the seal published earlier")
    return report

"""Seals: the ledger's events closed into chained Merkle roots (docs/evidence.md, "Seals").

After each seal of the event table (stats/rollup.py: no event at or below `sealed` can still
appear), a worker closes the events and tombstones with `seq` in (last seal's `last_seq`,
`sealed`] into a new seal: the RFC 9162 root of their leaves in `seq` order, hashed together with
the previous seal's hash. A transaction-scoped advisory lock keeps it to one sealer at a time
across workers and replicas; the database checks each seal extends the last one.

    seal_hash = SHA-256(0x02 ‖ prev_hash ‖ root ‖ id ‖ first_seq ‖ last_seq ‖ tree_size ‖
                        sealed_at)      (integers as 8-byte big-endian; sealed_at in µs since 1970)
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.core.times import iso
from service.ledger import merkle

SEALED_EVENTS = Counter("consent_ledger_sealed_leaves", "Leaves closed into ledger seals.")
# One sealer at a time (any 64-bit number no other lock of this database uses).
SEAL_LOCK = 0x636F6E73656E7401
# Leaves one seal closes at most: a burst is sealed in several steps, each a short transaction.
MAX_LEAVES = 100_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

LEAVES = text(
    """
    SELECT seq, leaf FROM consent_events
    WHERE seq > :after AND seq <= :upto AND leaf IS NOT NULL
    UNION ALL
    SELECT seq, leaf FROM ledger_tombstones WHERE seq > :after AND seq <= :upto
    ORDER BY seq
    """
)


# The same leaves, in the same order, as one value: PostgreSQL concatenates them, and the sealer
# splits them, rather than decoding a row per event.
CONCATENATED_LEAVES = text(
    """
    SELECT coalesce(string_agg(leaf, ''::bytea ORDER BY seq), ''::bytea) FROM (
        SELECT seq, leaf FROM consent_events
        WHERE seq > :after AND seq <= :upto AND leaf IS NOT NULL
        UNION ALL
        SELECT seq, leaf FROM ledger_tombstones WHERE seq > :after AND seq <= :upto
    ) AS ledger
    """
)


@dataclass(frozen=True, slots=True)
class Seal:
    id: int
    first_seq: int
    last_seq: int
    tree_size: int
    root: bytes
    prev_hash: bytes
    seal_hash: bytes
    sealed_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Seal:
        return cls(
            row.id,
            row.first_seq,
            row.last_seq,
            row.tree_size,
            bytes(row.root),
            bytes(row.prev_hash),
            bytes(row.seal_hash),
            row.sealed_at,
        )

    def expected_hash(self) -> bytes:
        return seal_hash(
            self.prev_hash,
            self.root,
            self.id,
            self.first_seq,
            self.last_seq,
            self.tree_size,
            self.sealed_at,
        )

    def head(self) -> dict[str, Any]:
        """What `consent-service ledger head --json` prints, to publish elsewhere."""
        return {
            "seal": self.id,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "tree_size": self.tree_size,
            "root": self.root.hex(),
            "prev_hash": self.prev_hash.hex(),
            "seal_hash": self.seal_hash.hex(),
            "sealed_at": iso(self.sealed_at),
        }


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def seal_hash(
    prev_hash: bytes,
    root: bytes,
    seal_id: int,
    first_seq: int,
    last_seq: int,
    tree_size: int,
    sealed_at: datetime,
) -> bytes:
    numbers = struct.pack(">qqqqq", seal_id, first_seq, last_seq, tree_size, micros(sealed_at))
    return hashlib.sha256(b"\x02" + prev_hash + root + numbers).digest()


LAST_SEAL = text("SELECT * FROM ledger_seals ORDER BY id DESC LIMIT 1")


async def seal_ledger(engine: AsyncEngine, *, max_leaves: int = MAX_LEAVES) -> int | None:
    """Close what is sealed in the event table into ledger seals; the leaves sealed, or None if
    another sealer holds the lock."""
    total = 0
    while True:
        async with engine.begin() as connection:
            locked = await connection.scalar(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SEAL_LOCK}
            )
            if not locked:
                return None
            last = Seal.from_row((await connection.execute(LAST_SEAL)).one())
            sealed = await connection.scalar(text("SELECT sealed FROM consent_stats_seal"))
            if sealed <= last.last_seq:
                return total
            upto = min(sealed, last.last_seq + max_leaves)
            leaves = merkle.split(
                await connection.scalar(CONCATENATED_LEAVES, {"after": last.last_seq, "upto": upto})
            )
            now = datetime.now(UTC)
            new = Seal(
                id=last.id + 1,
                first_seq=last.last_seq,
                last_seq=upto,
                tree_size=len(leaves),
                root=merkle.root(leaves),
                prev_hash=last.seal_hash,
                seal_hash=b"",
                sealed_at=now,
            )
            digest = new.expected_hash()
            await connection.execute(
                text(
                    "INSERT INTO ledger_seals (id, first_seq, last_seq, tree_size, root,"
                    " prev_hash, seal_hash, sealed_at) VALUES (:id, :first_seq, :last_seq,"
                    " :tree_size, :root, :prev_hash, :seal_hash, :sealed_at)"
                ),
                {
                    "id": new.id,
                    "first_seq": new.first_seq,
                    "last_seq": new.last_seq,
                    "tree_size": new.tree_size,
                    "root": new.root,
                    "prev_hash": new.prev_hash,
                    "seal_hash": digest,
                    "sealed_at": now,
                },
            )
        SEALED_EVENTS.inc(len(leaves))
        total += len(leaves)

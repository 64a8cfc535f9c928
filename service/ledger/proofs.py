"""Inclusion proofs against the ledger's seals, for exports (docs/evidence.md, "Exports").

Each exported event that is sealed gets the path from its leaf to its seal's root; the export
lists the seals it refers to, so it proves on its own that the events are in the ledger.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.ledger import merkle
from service.ledger.sealer import LEAVES, Seal

COVERING = text(
    "SELECT * FROM ledger_seals WHERE last_seq >= :seq AND first_seq < :seq ORDER BY id LIMIT 1"
)


class SealProofs:
    """Paths for events of one export; each seal's leaves are read once."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._leaves: dict[int, list[tuple[int, bytes]]] = {}
        self.seals: dict[int, Seal] = {}

    async def proof(
        self, seq: int, leaf: bytes | None, salt: bytes | None, identity: bytes | None
    ) -> dict[str, Any] | None:
        """The event's leaf, identity and salt, and its place in its seal; the place (`seal`,
        `leaf_index`, `tree_size`, `path`) is null while it is not sealed yet (the last second,
        or every event while sealing is off), when its receipt alone ties it to a signed root.
        None for an event stored before the ledger (no leaf)."""
        if leaf is None:
            return None
        proof: dict[str, Any] = {
            "seal": None,
            "seq": seq,
            "leaf": leaf.hex(),
            "identity": identity.hex() if identity is not None else None,
            "salt": salt.hex() if salt is not None else None,
            "leaf_index": None,
            "tree_size": None,
            "path": None,
        }
        row = (await self._connection.execute(COVERING, {"seq": seq})).one_or_none()
        if row is None:
            return proof
        seal = Seal.from_row(row)
        if seal.id not in self._leaves:
            found = await self._connection.execute(
                LEAVES, {"after": seal.first_seq, "upto": seal.last_seq}
            )
            self._leaves[seal.id] = [(r.seq, bytes(r.leaf)) for r in found]
            self.seals[seal.id] = seal
        leaves = self._leaves[seal.id]
        index = next(i for i, (at, _) in enumerate(leaves) if at == seq)
        path = merkle.path([lf for _, lf in leaves], index)
        proof.update(
            seal=seal.id,
            leaf_index=index,
            tree_size=len(leaves),
            path=[node.hex() for node in path],
        )
        return proof


def seal_body(seal: Seal) -> dict[str, Any]:
    """A seal as an export lists it: every field its hash covers."""
    return {
        "id": seal.id,
        "first_seq": seal.first_seq,
        "last_seq": seal.last_seq,
        "tree_size": seal.tree_size,
        "root": seal.root.hex(),
        "prev_hash": seal.prev_hash.hex(),
        "seal_hash": seal.seal_hash.hex(),
        "sealed_at": seal.head()["sealed_at"],
    }

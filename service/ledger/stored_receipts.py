"""Receipts as stored with their events (migration 0012; docs/evidence.md, "Receipts").

The writer keeps each group commit's JWS and the leaves of its tree in `ledger_receipts`, and
each event names that row. So the receipt the browser got can be given again (to a retry, in an
export) with the event's path in it, and `ledger verify` can check every stored receipt against
its leaves and the service's public keys.
"""

from __future__ import annotations

from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.ledger import merkle
from service.ledger.receipts import Proof, b64url_decode

RECEIPT = text("SELECT jws, leaves FROM ledger_receipts WHERE id = :id")


class StoredReceipts:
    """The stored receipts of some events; each receipt read once."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._found: dict[int, tuple[str, list[bytes]]] = {}

    async def proof(
        self, receipt: int | None, leaf: bytes | None, salt: bytes | None
    ) -> tuple[str, Proof] | None:
        """The receipt event `receipt` names and the event's proof in it; None if it has none."""
        if receipt is None or leaf is None:
            return None
        if receipt not in self._found:
            row = (await self._connection.execute(RECEIPT, {"id": receipt})).one_or_none()
            if row is None:
                return None
            self._found[receipt] = (row.jws, merkle.split(bytes(row.leaves)))
        jws, leaves = self._found[receipt]
        if leaf not in leaves:
            return None
        index = leaves.index(leaf)
        return jws, Proof(leaf, index, len(leaves), merkle.path(leaves, index), salt or b"")

    async def body(self, receipt: int | None, leaf: bytes | None) -> dict[str, Any] | None:
        """As an export shows it: the JWS and the path from the event's leaf to its root."""
        found = await self.proof(receipt, leaf, None)
        if found is None:
            return None
        jws, proof = found
        return {
            "jws": jws,
            "leaf_index": proof.index,
            "tree_size": proof.size,
            "path": [node.hex() for node in proof.path],
        }


class ReceiptMismatch(ValueError):
    pass


def check_receipt(jws: str, leaves: bytes, keys: dict[str, Ed25519PublicKey]) -> None:
    """Raise ReceiptMismatch unless `jws` is signed by one of `keys` (by kid) and signs the root
    of `leaves`."""
    try:
        header_b64, payload_b64, signature_b64 = jws.split(".")
        header = _json(b64url_decode(header_b64))
        payload = _json(b64url_decode(payload_b64))
        key = keys[header["kid"]]
        key.verify(b64url_decode(signature_b64), f"{header_b64}.{payload_b64}".encode())
    except KeyError as exc:
        raise ReceiptMismatch(f"it names a key the service does not hold ({exc})") from None
    except (ValueError, InvalidSignature) as exc:
        raise ReceiptMismatch(f"its signature does not verify ({type(exc).__name__})") from None
    tree = merkle.split(leaves)
    if payload.get("tree_size") != len(tree) or payload.get("root") != merkle.root(tree).hex():
        raise ReceiptMismatch(f"it does not sign the root of its {len(tree)} stored leaves")


def _json(data: bytes) -> dict[str, Any]:
    value = orjson.loads(data)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value

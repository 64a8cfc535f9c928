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

from service.core.logging import get_logger
from service.ledger import merkle
from service.ledger.receipts import Proof, ReceiptSigner, b64url_decode

log = get_logger("service.ledger.receipts")

RECEIPT = text("SELECT jws, leaves FROM ledger_receipts WHERE id = :id")


class StoredReceipts:
    """The stored receipts of some events; each receipt read once."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._found: dict[int, tuple[str, list[bytes]]] = {}

    async def proof(
        self, receipt: int | None, leaf: bytes | None, salt: bytes | None
    ) -> tuple[str, Proof] | None:
        """The receipt event `receipt` names and the event's proof in it; None if it names none.
        ReceiptNotHeld if the receipt it names is not stored or does not hold its leaf: the
        event or the receipt was changed around the database's triggers (`ledger verify` says
        the same), and no receipt may stand in for that one."""
        if receipt is None or leaf is None:
            return None
        if receipt not in self._found:
            row = (await self._connection.execute(RECEIPT, {"id": receipt})).one_or_none()
            if row is None:
                raise ReceiptNotHeld(f"receipt {receipt}, which the event names, is not stored")
            self._found[receipt] = (row.jws, merkle.split(bytes(row.leaves)))
        jws, leaves = self._found[receipt]
        if leaf not in leaves:
            raise ReceiptNotHeld(
                f"receipt {receipt}, which the event names, does not hold the event's leaf"
            )
        index = leaves.index(leaf)
        return jws, Proof(leaf, index, len(leaves), merkle.path(leaves, index), salt or b"")

    async def body(self, receipt: int | None, leaf: bytes | None) -> dict[str, Any] | None:
        """As an export shows it: the JWS and the path from the event's leaf to its root; for
        an event whose receipt is not held (`ReceiptNotHeld`), what is wrong, in place of the
        JWS (docs/evidence.md, "Exports"): not `null`, which says it never had one."""
        try:
            found = await self.proof(receipt, leaf, None)
        except ReceiptNotHeld as exc:
            return {"problem": f"{exc}: {VERIFY_HINT}"}
        if found is None:
            return None
        jws, proof = found
        return {
            "jws": jws,
            "leaf_index": proof.index,
            "tree_size": proof.size,
            "path": [node.hex() for node in proof.path],
        }


async def receipt_again(
    stored: StoredReceipts,
    signer: ReceiptSigner | None,
    receipt: int | None,
    leaf: bytes | None,
    salt: bytes | None,
) -> tuple[str, Proof] | None:
    """The receipt an event was stored with, and its proof, given again (a retry, a withdrawal
    read back); for one stored without (before receipts were kept, or signing failed), a receipt
    of its own leaf signed now, when `signer` is given. None when the receipt it names is not
    held (logged): signed now, a receipt would vouch for whatever the row holds today."""
    try:
        kept = await stored.proof(receipt, leaf, salt)
    except ReceiptNotHeld as exc:
        log.error("stored_receipt_not_held", problem=str(exc), hint=VERIFY_HINT)
        return None
    if kept is None and signer is not None and leaf is not None and salt is not None:
        jws, [proof] = signer.sign_batch([leaf], [salt])
        kept = jws, proof
    return kept


VERIFY_HINT = "run consent-service ledger verify"


class ReceiptMismatch(ValueError):
    pass


class ReceiptNotHeld(ReceiptMismatch):
    """An event names a receipt that is not stored, or that does not hold the event's leaf."""


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
        raise ReceiptMismatch(
            f"it names key {exc}, which is not among the keys it was checked with: a retired key "
            "left out of CONSENT_RECEIPT_PREVIOUS_KEYS (or --jwks), or a receipt the service "
            "did not sign"
        ) from None
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

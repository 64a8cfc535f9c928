"""Merkle trees as RFC 9162 §2.1 defines them (the hashes of Certificate Transparency 2.0):

    leaf hash  = SHA-256(0x00 ‖ data)
    node hash  = SHA-256(0x01 ‖ left ‖ right)
    MTH({})    = SHA-256()
    MTH(D[n])  = node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two smaller than n

so a root or an inclusion path computed here checks with any RFC 9162 implementation
(docs/evidence.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


HASH_BYTES = 32


def split(concatenated: bytes) -> list[bytes]:
    """Hashes stored one after another (a receipt's leaves, a seal's) as a list."""
    return [concatenated[at : at + HASH_BYTES] for at in range(0, len(concatenated), HASH_BYTES)]


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (already hashed with `leaf_hash`)."""
    if not leaves:
        return EMPTY_ROOT
    # Bottom up, level by level: the same tree as the recursive definition, because a level's
    # odd last node is carried up unchanged (it is the right subtree's whole left-leaning part).
    level = list(leaves)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The inclusion path of leaf `index` (RFC 9162 §2.1.3.1), nearest sibling first."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} of a tree of {len(leaves)}")
    proof: list[bytes] = []
    lo, hi = 0, len(leaves)
    # Top down, then reversed: PATH(m, D[n]) lists the sibling subtrees from the leaf up.
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            proof.append(root(leaves[lo + k : hi]))
            hi = lo + k
        else:
            proof.append(root(leaves[lo : lo + k]))
            lo = lo + k
    proof.reverse()
    return proof


def root_and_paths(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root and every leaf's inclusion path, each subtree hashed once (a batch's
    receipts)."""
    found: list[list[bytes]] = [[] for _ in leaves]

    def walk(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return leaves[lo]
        k = _split(hi - lo)
        left, right = walk(lo, lo + k), walk(lo + k, hi)
        for i in range(lo, lo + k):
            found[i].append(right)
        for i in range(lo + k, hi):
            found[i].append(left)
        return node_hash(left, right)

    if not leaves:
        return EMPTY_ROOT, found
    return walk(0, len(leaves)), found


def verify(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does `proof` lead from `leaf` (a leaf hash) at `index` of a tree of
    `size` leaves to `expected_root`?"""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root

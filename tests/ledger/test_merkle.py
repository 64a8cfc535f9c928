"""The Merkle tree of service/ledger/merkle.py against Certificate Transparency's reference
vectors (the RFC 6962 / RFC 9162 test data: eight inputs, the root of each prefix, four inclusion
paths), and every path of random trees checked by the RFC 9162 §2.1.3.2 verifier."""

from __future__ import annotations

import random

import pytest

from service.ledger import merkle

INPUTS = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
LEAVES = [merkle.leaf_hash(data) for data in INPUTS]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index from 1, tree size, path)
INCLUSION = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        2,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


@pytest.mark.parametrize("size", range(len(ROOTS)))
def test_the_root_of_every_prefix_is_the_reference_root(size: int) -> None:
    assert merkle.root(LEAVES[:size]).hex() == ROOTS[size]


@pytest.mark.parametrize(("position", "size", "expected"), INCLUSION)
def test_inclusion_paths_are_the_reference_paths(
    position: int, size: int, expected: list[str]
) -> None:
    leaves = LEAVES[:size]
    index = position - 1
    assert [node.hex() for node in merkle.path(leaves, index)] == expected
    assert [node.hex() for node in merkle.root_and_paths(leaves)[1][index]] == expected
    assert merkle.verify(
        leaves[index], index, size, merkle.path(leaves, index), merkle.root(leaves)
    )


def test_every_path_of_random_trees_verifies_and_a_changed_leaf_does_not() -> None:
    rng = random.Random(9162)
    for size in [*range(1, 40), 63, 64, 65, 200]:
        leaves = [merkle.leaf_hash(rng.randbytes(rng.randint(0, 20))) for _ in range(size)]
        top = merkle.root(leaves)
        all_paths = merkle.root_and_paths(leaves)[1]
        for index in range(size):
            proof = merkle.path(leaves, index)
            assert all_paths[index] == proof
            assert merkle.verify(leaves[index], index, size, proof, top)
            assert not merkle.verify(leaves[(index + 1) % size], index, size, proof, top) or (
                size == 1
            )
            assert not merkle.verify(leaves[index], index + size, size, proof, top)

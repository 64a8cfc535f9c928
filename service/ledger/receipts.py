"""Signed consent receipts: one EdDSA (Ed25519) compact JWS per group commit over the Merkle root
of its events' leaves, and per event the path from its leaf to that root (docs/evidence.md,
"Receipts").

Signing costs tens of microseconds, which one signature per event would pay on every request; a
batch of n events pays it once. The JWS verifies with the public keys at
`/.well-known/jwks.json` (RFC 7517; `kid` is the key's RFC 7638 thumbprint); the retired keys of
`CONSENT_RECEIPT_PREVIOUS_KEYS` stay there, so a receipt signed before a rotation still verifies.

    header  {"alg": "EdDSA", "kid": …, "typ": "consent-receipt+jws"}
    payload {"iat": seconds, "root": hex, "tree_size": n, "v": 1}
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from service.core.config import Settings
from service.core.dev_keys import dev_receipt_key_path, ensure_dev_receipt_key
from service.core.logging import get_logger
from service.ledger import merkle

log = get_logger("service.ledger.receipts")

TYPE = "consent-receipt+jws"
SEED_BYTES = 32


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_seed(text: str) -> Ed25519PrivateKey:
    """A private key from its 32-byte seed in base64url (what CONSENT_RECEIPT_KEY holds)."""
    try:
        seed = b64url_decode(text.strip())
    except ValueError as exc:
        raise ValueError("a receipt key is 32 random bytes in base64url") from exc
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a receipt key is 32 random bytes in base64url, not {len(seed)} bytes")
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)}
    # RFC 7638: the SHA-256 of the required members, in this order, without whitespace.
    thumbprint = hashlib.sha256(orjson.dumps(jwk, option=orjson.OPT_SORT_KEYS)).digest()
    return {**jwk, "kid": b64url(thumbprint), "alg": "EdDSA", "use": "sig"}


def keys_of_jwk_set(document: Any) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 keys of a JWK Set as `/.well-known/jwks.json` serves it, by `kid`: what a
    verifier without the service's private keys checks receipts with. ValueError naming what is
    wrong, a `kid` that is not its key's RFC 7638 thumbprint included (it would let one key pass
    for another)."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('not a JWK Set: no "keys" list')
    keys: dict[str, Ed25519PublicKey] = {}
    for number, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, dict) or (jwk.get("kty"), jwk.get("crv")) != ("OKP", "Ed25519"):
            raise ValueError(f"key {number} is not an Ed25519 key (kty OKP, crv Ed25519)")
        try:
            key = Ed25519PublicKey.from_public_bytes(b64url_decode(str(jwk["x"])))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"key {number}: no 32-byte x ({exc})") from None
        kid = public_jwk(key)["kid"]
        if jwk.get("kid") != kid:
            raise ValueError(f"key {number}: its kid is not its RFC 7638 thumbprint ({kid})")
        keys[kid] = key
    if not keys:
        raise ValueError("the JWK Set holds no key")
    return keys


@dataclass(frozen=True, slots=True)
class Proof:
    """One event's place in its batch's tree."""

    leaf: bytes
    index: int
    size: int
    path: list[bytes]
    salt: bytes

    def body(self) -> dict[str, Any]:
        return {
            "leaf": self.leaf.hex(),
            "leaf_index": self.index,
            "tree_size": self.size,
            "path": [node.hex() for node in self.path],
            "salt": self.salt.hex(),
        }


class ReceiptSigner:
    """The service's current key, and the public keys of the retired ones."""

    def __init__(self, current: Ed25519PrivateKey, previous: list[Ed25519PrivateKey]) -> None:
        self._key = current
        self._jwk = public_jwk(current.public_key())
        header = {"alg": "EdDSA", "kid": self._jwk["kid"], "typ": TYPE}
        self._header = b64url(orjson.dumps(header))
        # Every key a stored receipt may name, by kid (ledger verify checks them).
        self.public_keys = {self._jwk["kid"]: current.public_key()}
        keys = [self._jwk]
        for key in previous:
            jwk = public_jwk(key.public_key())
            if jwk["kid"] not in self.public_keys:
                self.public_keys[jwk["kid"]] = key.public_key()
                keys.append(jwk)
        self.jwks: dict[str, Any] = {"keys": keys}
        self.jwks_body = orjson.dumps(self.jwks)

    @property
    def kid(self) -> str:
        return self._jwk["kid"]

    def sign_root(self, root: bytes, size: int) -> str:
        return self.sign({"iat": int(time.time()), "root": root.hex(), "tree_size": size, "v": 1})

    def sign(self, payload: dict[str, Any], typ: str = TYPE) -> str:
        """A compact JWS of `payload` (JSON) with the current key."""
        header = self._header
        if typ != TYPE:
            header = b64url(orjson.dumps({"alg": "EdDSA", "kid": self.kid, "typ": typ}))
        signing_input = f"{header}.{b64url(orjson.dumps(payload))}"
        return f"{signing_input}.{b64url(self._key.sign(signing_input.encode()))}"

    def sign_batch(self, leaves: list[bytes], salts: list[bytes]) -> tuple[str, list[Proof]]:
        """One receipt for the whole batch, and each event's proof (in the batch's order)."""
        size = len(leaves)
        root, paths = merkle.root_and_paths(leaves)
        receipt = self.sign_root(root, size)
        return receipt, [
            Proof(leaf, index, size, paths[index], salt)
            for index, (leaf, salt) in enumerate(zip(leaves, salts, strict=True))
        ]


def receipt_signer_from_settings(settings: Settings) -> ReceiptSigner:
    """The configured key; in dev mode without one, the key generated once in the data folder
    (settings refuse production without a key)."""
    key = settings.receipt_key
    if key is None:
        key, created = ensure_dev_receipt_key(settings)
        if created:
            log.warning(
                "dev_receipt_key_generated",
                path=str(dev_receipt_key_path(settings)),
                hint="set CONSENT_RECEIPT_KEY in production",
            )
    return ReceiptSigner(
        parse_seed(key.get_secret_value()),
        [parse_seed(old.get_secret_value()) for old in settings.receipt_previous_keys],
    )

"""Keyed hashing of personal identifiers (IP addresses, account ids).

A plain or salted SHA-256 of an IPv4 address can be reversed by trying all 2^32 addresses in
minutes; an HMAC under a key kept outside the database cannot. Each hash is stored with the id of
the key that made it, so the key can rotate while look-ups still find older records.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import socket
import unicodedata
from dataclasses import dataclass

from pydantic import SecretStr

from service.core.config import Settings
from service.core.dev_keys import dev_key_path, ensure_dev_key
from service.core.logging import get_logger

log = get_logger("service.hashing")


@functools.lru_cache(maxsize=16)
def _keyed_state(secret: bytes) -> hmac.HMAC:
    return hmac.new(secret, digestmod=hashlib.sha256)


@functools.lru_cache(maxsize=16)
def _derived_key(secret: bytes, label: str) -> bytes:
    """A key of its own for each use of the secret (BLAKE2b takes at most 64 bytes of key)."""
    return hmac.new(secret, f"consent-service/{label}".encode(), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class HashKey:
    key_id: str
    secret: bytes

    @classmethod
    def from_secret(cls, secret: SecretStr) -> HashKey:
        raw = secret.get_secret_value().encode()
        # The id names the key without revealing it: an HMAC of a fixed label under the key.
        key_id = hmac.new(raw, b"consent-service/key-id", hashlib.sha256).hexdigest()[:12]
        return cls(key_id=key_id, secret=raw)

    def digest(self, kind: str, value: str) -> str:
        # The kind is part of the message, so an IP and a user id never share a hash. The keyed
        # state is copied rather than rebuilt from the key each time (the hot path hashes twice).
        mac = self._keyed.copy()
        mac.update(f"{kind}\x00{value}".encode())
        return mac.hexdigest()

    def mac(self, label: str, value: bytes) -> str:
        """BLAKE2b in its keyed mode (a MAC, RFC 7693), 32 bytes, under a key derived from this
        one for `label` alone. For a value hashed on every event that no look-up recomputes from
        an identifier (the request hash): under callgrind it costs 9.6k instructions against
        HMAC-SHA256's 23.7k through OpenSSL (docs/guarantees.md, "No raw IP address is stored or
        logged"). The IP and account hashes stay HMAC-SHA256: stored ones are looked up."""
        key = _derived_key(self.secret, label)
        return hashlib.blake2b(value, key=key, digest_size=32).hexdigest()

    @property
    def _keyed(self) -> hmac.HMAC:
        return _keyed_state(self.secret)


@dataclass(frozen=True, slots=True)
class Hasher:
    current: HashKey
    previous: tuple[HashKey, ...] = ()

    @classmethod
    def from_secrets(cls, current: SecretStr, previous: list[SecretStr]) -> Hasher:
        return cls(
            current=HashKey.from_secret(current),
            previous=tuple(HashKey.from_secret(key) for key in previous),
        )

    @property
    def all_keys(self) -> tuple[HashKey, ...]:
        return (self.current, *self.previous)

    def ip(self, address: str) -> str:
        return self.current.digest("ip", normalise_ip(address))

    def ip_normalised(self, address: str) -> str:
        """`ip` for an address already in canonical form (as `ClientAddress` returns it)."""
        return self.current.digest("ip", address)

    def user(self, user_id: str) -> str | None:
        """The hash an account id is stored under: of its one form (`normalise_account_id`);
        None when that form is empty (nothing but white space or invisible characters)."""
        account = normalise_account_id(user_id)
        return self.current.digest("user", account) if account else None

    def ip_candidates(self, address: str) -> list[tuple[str, str]]:
        """(key id, hash) under every configured key, for look-ups across key rotations."""
        normalised = normalise_ip(address)
        return [(key.key_id, key.digest("ip", normalised)) for key in self.all_keys]

    def user_candidates(self, user_id: str) -> list[tuple[str, str]]:
        """(key id, hash) under every key, of the account id's one form and, when it was given
        in another, of that spelling too: events stored before account ids had one form keep
        the hash of the spelling their banner sent (docs/guarantees.md, "No raw IP address is
        stored or logged")."""
        spellings = dict.fromkeys((normalise_account_id(user_id), user_id))
        return [
            (key.key_id, key.digest("user", spelling))
            for key in self.all_keys
            for spelling in spellings
        ]


def hasher_from_settings(settings: Settings) -> Hasher:
    """The configured keys; in dev mode without one, the key generated once in the data folder
    (settings refuse production without a key)."""
    key = settings.ip_hash_salt
    if key is None:
        key, created = ensure_dev_key(settings)
        if created:
            log.warning(
                "dev_ip_hash_key_generated",
                path=str(dev_key_path(settings)),
                hint="set CONSENT_IP_HASH_SALT in production; keep the key outside the database",
            )
    return Hasher.from_secrets(key, settings.ip_hash_previous_salts)


def normalise_account_id(user_id: str) -> str:
    """The one form of an account id its hash is taken of: Unicode's composed form (NFC), without
    the white space and invisible formatting characters (zero-width spaces, byte order marks, bidi
    marks) around it. "alice ", "\u200balice" and "alice" are one account; an id that is nothing
    but those characters becomes "" (the banner then stores no account id). Case is kept: an
    account system may tell "Alice" from "alice"."""
    if user_id.isascii() and not user_id[:1].isspace() and not user_id[-1:].isspace():
        return user_id  # the common case: ASCII is its own composed form, with no Cf characters
    text = unicodedata.normalize("NFC", user_id)
    start, end = 0, len(text)
    while start < end and _around(text[start]):
        start += 1
    while end > start and _around(text[end - 1]):
        end -= 1
    return text[start:end]


def _around(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) == "Cf"


def normalise_ip(address: str) -> str:
    """Canonical text of an address (see `canonical_ip`); ValueError when it is not one."""
    canonical = canonical_ip(address)
    if canonical is None:
        raise ValueError(f"not an IPv4 or IPv6 address: {address[:64]!r}")
    return canonical


_MAPPED = bytes(10) + b"\xff\xff"
_COMPATIBLE = bytes(12)


def canonical_ip(address: str) -> str | None:
    """The one text of an address that its hash is taken of: IPv4 as a dotted quad, IPv6
    compressed and lower-case (RFC 5952), IPv4-mapped IPv6 as the IPv4 address; None when it is
    not an address. (The C library's parser and printer: a tenth of the `ipaddress` module's cost
    on the hot path; the printer's one disagreement with `ipaddress`, the deprecated
    IPv4-compatible form, is left to `ipaddress`.)"""
    text = address.strip()
    try:
        if ":" not in text:
            return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text))
        packed = socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):  # not an address; ValueError for NUL or non-ASCII characters
        return None
    if packed.startswith(_MAPPED):
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    if packed.startswith(_COMPATIBLE):
        return str(ipaddress.IPv6Address(packed))
    return socket.inet_ntop(socket.AF_INET6, packed)

"""Keyed hashing of personal identifiers (IP addresses, account ids).

A plain or salted SHA-256 of an IPv4 address can be reversed by trying all 2^32 addresses in
minutes; an HMAC under a key kept outside the database cannot. Each hash is stored with the id of
the key that made it, so the key can rotate while look-ups still find older records.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass

from pydantic import SecretStr


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
        # The kind is part of the message, so an IP and a user id never share a hash.
        message = f"{kind}\x00{value}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()


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
        """`ip` for an address already in canonical form (as `client_ip` returns it)."""
        return self.current.digest("ip", address)

    def user(self, user_id: str) -> str:
        return self.current.digest("user", user_id)

    def ip_candidates(self, address: str) -> list[tuple[str, str]]:
        """(key id, hash) under every configured key, for look-ups across key rotations."""
        normalised = normalise_ip(address)
        return [(key.key_id, key.digest("ip", normalised)) for key in self.all_keys]

    def user_candidates(self, user_id: str) -> list[tuple[str, str]]:
        return [(key.key_id, key.digest("user", user_id)) for key in self.all_keys]


def normalise_ip(address: str) -> str:
    """Canonical text of an address: IPv4-mapped IPv6 becomes IPv4, IPv6 is compressed."""
    ip = ipaddress.ip_address(address.strip())
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)

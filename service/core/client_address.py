"""The client's address, as far as it can be believed.

The socket peer is the client unless the peer is a configured trusted proxy; then the one header
the proxies are configured to set (`CONSENT_FORWARDED_HEADER`: `X-Forwarded-For`, or RFC 7239
`Forwarded`) is read from the right, skipping further trusted proxies, and the first address not
ours is the client. The other header is never read: a proxy that appends to one passes the other
through as the browser wrote it, and a browser can write anything. Headers from anyone but a
trusted proxy are ignored too. Several lines of one header count as one comma-separated list, in
order (RFC 9110 §5.3).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable

from service.core.config import IpNetworks
from service.core.hashing import canonical_ip

_FORWARDED_FOR = re.compile(r'for=(?:"([^"]*)"|([^;,\s]*))', re.IGNORECASE)


def parse_ip(value: str) -> str | None:
    """The canonical text of a forwarded address, which may carry a port (`v4:port`,
    `[v6]:port`) or brackets; None when it is not an address (e.g. RFC 7239 `unknown`)."""
    value = value.strip()
    if value.startswith("["):  # [v6]:port or [v6]
        value = value[1 : value.find("]")] if "]" in value else value
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    return canonical_ip(value)


def _forwarded_chain(headers: Iterable[tuple[bytes, bytes]], header: bytes) -> list[str]:
    joined = ",".join(value.decode("latin-1") for name, value in headers if name == header)
    if header == b"forwarded":
        return [quoted or bare for quoted, bare in _FORWARDED_FOR.findall(joined)]
    return [part for part in joined.split(",") if part.strip()]


class ClientAddress:
    """Finds the client address of a request, given the trusted proxies (built once per app)."""

    MAX_REMEMBERED = 4096

    def __init__(self, proxies: IpNetworks, header: str = "x-forwarded-for") -> None:
        self._header = header.encode()
        self._networks = tuple(
            (
                socket.AF_INET if net.version == 4 else socket.AF_INET6,
                int(net.network_address),
                int(net.netmask),
            )
            for net in proxies
        )
        self._trusted: dict[str, bool] = {}

    def __call__(self, peer: str | None, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """The client address in canonical text (see `canonical_ip`); None when unknown.
        `headers` are the raw ASGI header pairs (lower-case names)."""
        address = parse_ip(peer) if peer else None
        if address is None or not self._networks or not self.trusted(address):
            return address
        for hop in reversed(_forwarded_chain(headers, self._header)):
            candidate = parse_ip(hop)
            if candidate is None:
                # "unknown" or an obfuscated identifier (RFC 7239): the client cannot be known.
                return None
            address = candidate
            if not self.trusted(address):
                return address
        return address

    def trusted(self, address: str) -> bool:
        """Whether `address` (canonical text) is in a trusted network."""
        known = self._trusted.get(address)
        if known is None:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            value = int.from_bytes(socket.inet_pton(family, address), "big")
            known = any(
                kind == family and value & mask == network for kind, network, mask in self._networks
            )
            # Remembered for the few addresses proxies have; not for every client in the world.
            if len(self._trusted) < self.MAX_REMEMBERED:
                self._trusted[address] = known
        return known

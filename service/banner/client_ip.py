"""The client's address, as far as it can be believed.

The socket peer is the client unless the peer is a configured trusted proxy; then the proxy's
`X-Forwarded-For` (or RFC 7239 `Forwarded`) is read from the right, skipping further trusted
proxies, and the first address not ours is the client. Headers from anyone else are ignored:
a browser can write any `X-Forwarded-For` it likes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from service.core.config import IpNetworks

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_FORWARDED_FOR = re.compile(r'for=(?:"([^"]*)"|([^;,\s]*))', re.IGNORECASE)


def parse_ip(value: str) -> IpAddress | None:
    value = value.strip()
    if value.startswith("["):  # [v6]:port or [v6]
        value = value[1 : value.find("]")] if "]" in value else value
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IpAddress, proxies: IpNetworks) -> bool:
    return any(address.version == network.version and address in network for network in proxies)


def _forwarded_chain(headers: Mapping[str, str]) -> list[str]:
    forwarded = headers.get("forwarded")
    if forwarded:
        return [quoted or bare for quoted, bare in _FORWARDED_FOR.findall(forwarded)]
    xff = headers.get("x-forwarded-for")
    if xff:
        return [part for part in xff.split(",") if part.strip()]
    return []


def client_ip(
    peer: str | None, headers: Mapping[str, str], proxies: IpNetworks
) -> IpAddress | None:
    """The client address, normalised (IPv4-mapped IPv6 becomes IPv4); None when unknown."""
    address = parse_ip(peer) if peer else None
    if address is None or not proxies or not _trusted(address, proxies):
        return address
    for hop in reversed(_forwarded_chain(headers)):
        candidate = parse_ip(hop)
        if candidate is None:
            # "unknown" or an obfuscated identifier (RFC 7239): the client cannot be known.
            return None
        address = candidate
        if not _trusted(address, proxies):
            return address
    return address

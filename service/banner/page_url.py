"""A page URL as the ledger keeps it: scheme, host, port and path; no credentials, query, fragment
or path parameters (they routinely carry personal data).

Not `urllib.parse.urlsplit` as such: since Python 3.11 it keeps its last 128 inputs in an
`lru_cache`, so the raw URLs of the latest events (query strings, e-mail addresses and tokens
included) would stay in the worker's memory after their requests ended. And a banner sends a page
URL with most events: split by hand, the common URL (ASCII, no IPv6 literal, no whitespace) costs
about a third of what urlsplit and its `hostname` and `port` cost. Anything else takes urlsplit's
own code without its cache, so every URL is read exactly as urlsplit reads it
(`tests/banner/test_page_url.py` compares the two over tens of thousands of URLs), except that an
authority holding a character RFC 3986 does not allow there is refused (`_NOT_IN_AUTHORITY`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import SplitResult, urlsplit

# The function under urlsplit's cache (a plain function where it has none).
_split: Callable[[str], SplitResult] = getattr(urlsplit, "__wrapped__", urlsplit)

# Where a page URL's path stops: path parameters (`;email=…`) and an encoded query or fragment
# carry personal data as readily as the query itself.
_PATH_END = re.compile(r";|%3[fF]|%23")
# RFC 3986's scheme, then "//" and the authority, then the path (up to a query or fragment).
_COMMON = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^?#]*)")
_SPECIAL = re.compile(r"[\[\]\t\r\n]")
# What RFC 3986 does not allow in an authority (user info, host, port), in ASCII: white space,
# controls, `\`, `"`, `<`, `>`, `^`, `` ` ``, `{`, `|`, `}`. urlsplit takes them, and reads
# `https://itsailor.io\@evil.com/` as the host `evil.com`, where a browser goes to `itsailor.io`
# (it reads `\` as `/`): the ledger would name a page the visitor never saw.
_NOT_IN_AUTHORITY = re.compile(r"[\x00-\x20\x7f\\\"<>^`{|}]")


def _common(value: str) -> bool:
    """Nothing in `value` that urlsplit treats specially: non-ASCII (checked after NFKC
    normalisation), tabs and line breaks (removed anywhere), brackets (an IPv6 literal). Leading
    C0 controls and spaces, which urlsplit strips, cannot start `_COMMON`'s scheme."""
    return value.isascii() and _SPECIAL.search(value) is None


def origin_and_path(value: str) -> str:
    """`value`'s scheme, host, port and path; ValueError when it is not an absolute http(s) URL
    (or its port is not a port), worded as urlsplit words it."""
    common = _COMMON.match(value) if _common(value) else None
    if common is None:
        parts = _split(value)
        scheme, netloc, path = parts.scheme, parts.netloc, parts.path
    else:
        scheme, netloc, path = common.group(1).lower(), common.group(2), common.group(3)
    if scheme not in {"http", "https"} or not netloc:
        raise ValueError("must be an absolute http(s) URL")
    refused = _NOT_IN_AUTHORITY.search(netloc)
    if refused is not None:
        raise ValueError(
            f"must be an absolute http(s) URL: {refused.group()!r} is not allowed in its host"
            " part (RFC 3986)"
        )
    if common is None:
        host, port = parts.hostname or "", parts.port
        if ":" in host:  # an IPv6 literal keeps its brackets
            host = f"[{host}]"
    else:
        # urlsplit's `hostname` and `port`, for an authority without brackets.
        name, _, port_text = netloc.rpartition("@")[2].partition(":")
        name, percent, zone = name.partition("%")  # a zone id keeps its case
        host, port = name.lower() + percent + zone, _port(port_text)
    path = _PATH_END.split(path, maxsplit=1)[0]
    return f"{scheme}://{host}{f':{port}' if port else ''}{path or '/'}"


def _port(text: str) -> int | None:
    """urlsplit's `port` of the text after the host's colon."""
    if not text:
        return None
    if not (text.isdigit() and text.isascii()):
        raise ValueError(f"Port could not be cast to integer value as {text!r}")
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError("Port out of range 0-65535")
    return port

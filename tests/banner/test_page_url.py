"""A page URL is read exactly as `urllib.parse.urlsplit` reads it, without urlsplit's cache of raw
URLs (service/banner/page_url.py)."""

from __future__ import annotations

import itertools
import re
from typing import Any
from urllib.parse import urlsplit

import pytest

from service.banner.page_url import origin_and_path

PATH_END = re.compile(r";|%3[fF]|%23")


NOT_IN_AUTHORITY = set(map(chr, range(0x21))) | set('\x7f\\"<>^`{|}')


def reference(value: str) -> str:
    """The page URL as the service kept it before page_url.py: urlsplit and its properties;
    refused when its authority holds an ASCII character RFC 3986 does not allow there."""
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("must be an absolute http(s) URL")
    refused = next((c for c in parts.netloc if c in NOT_IN_AUTHORITY), None)
    if refused is not None:
        raise ValueError(
            f"must be an absolute http(s) URL: {refused!r} is not allowed in its host part"
            " (RFC 3986)"
        )
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    path = PATH_END.split(parts.path, maxsplit=1)[0]
    return f"{parts.scheme}://{host}{port}{path or '/'}"


def outcome(read: object, value: str) -> str:
    try:
        return str(read(value))  # type: ignore[operator]
    except ValueError as exc:
        return f"ValueError: {exc}"


LEADS = ["", " ", "\x01"]
SCHEMES = ["http://", "HTTPS://", "hTTp:/", "ftp://", "h_ttp://", "//"]
USERS = ["", "u:p@", "a@b@"]
HOSTS = [
    "Example.COM", "ex%41MPLE.Com", "", "[::1]", "[2001:DB8::1]", "[v1.x]", "[bad", "bad]",
    "[::1", "exämple.com", "ex\tample.com", "e\nx.io", "x.io\x01", "x.io\\@evil.com", "exa mple.com",
    "x.io\\",
]  # fmt: skip
PORTS = ["", ":80", ":0", ":080", ":65536", ":", ": 80", ":٣"]
PATHS = ["", "/A;b", "/p%3fq%23x", "/ä b", "a"]
TAILS = ["", "?q=1&email=a@b.c", "#f?q"]


def corpus() -> list[str]:
    parts = itertools.product(LEADS, SCHEMES, USERS, HOSTS, PORTS, PATHS, TAILS)
    return ["".join(part) for part in parts]


def test_every_url_reads_as_urlsplit_reads_it() -> None:
    urls = corpus()
    assert len(urls) > 50_000
    outcomes = [outcome(origin_and_path, url) for url in urls]
    differ = [
        (url, read, outcome(reference, url))
        for url, read in zip(urls, outcomes, strict=True)
        if read != outcome(reference, url)
    ]
    assert differ == []
    # The corpus reaches both answers.
    assert any(outcome.startswith("ValueError") for outcome in outcomes)
    assert any(outcome.startswith("http") for outcome in outcomes)


@pytest.mark.parametrize(
    "url", ["https://Example.com/a?q=1", "http://[::1]:8080/x?y", "https://exämple.com/?token=t"]
)
def test_no_raw_url_stays_in_urlsplits_cache(url: str) -> None:
    cached: Any = urlsplit  # an lru_cache wrapper since Python 3.11
    if not hasattr(cached, "cache_info"):
        pytest.skip("this Python's urlsplit keeps no cache")
    cached.cache_clear()
    origin_and_path(url)
    assert cached.cache_info().currsize == 0


@pytest.mark.parametrize(
    ("url", "refused"),
    [("https://itsailor.io\\@evil.com/", "\\"), ("https://exa mple.com/", " "), ("https://a|b.io/", "|")],
)  # fmt: skip
def test_an_authority_rfc_3986_does_not_allow_is_refused(url: str, refused: str) -> None:
    """urlsplit read `https://itsailor.io\\@evil.com/` as the host `evil.com`, where a browser
    goes to `itsailor.io`: the ledger named a page the visitor never saw."""
    with pytest.raises(ValueError, match="is not allowed in its host part") as error:
        origin_and_path(url)
    assert f"{refused!r} is not allowed" in str(error.value)

"""A request's headers, read once: by name, and refused where a header that holds one value was
sent twice."""

from __future__ import annotations

from service.core.errors import BadRequest

# Request headers that hold one value (RFC 9110, section 5.3: only a list may be sent as several
# lines): sent twice, which one counts would be a guess, as a repeated JSON key or query flag.
SINGLE_VALUED = (b"content-type", b"content-encoding", b"origin", b"sec-gpc", b"dnt")


def request_headers(raw: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """The request's headers by name (ASGI's lower-case bytes); a 400 naming a header of
    SINGLE_VALUED sent more than once."""
    headers = dict(raw)
    if len(headers) != len(raw):  # some name came twice: rare, and only then counted
        for name in SINGLE_VALUED:
            if sum(1 for sent, _ in raw if sent == name) > 1:
                raise BadRequest(
                    f"the {name.decode()} header was sent more than once; it holds one value"
                )
    return headers


def etag_matches(if_none_match: str | bytes | None, etag: str) -> bool:
    """Whether an `If-None-Match` value names `etag` (RFC 9110, section 13.1.2): `*`, or the tag
    in its comma-separated list, compared weakly (`W/"x"` matches `"x"`). A tag only contained in
    another (`"abc"` inside `"xabc"`) is no match."""
    if not if_none_match:
        return False
    text = if_none_match.decode("latin-1") if isinstance(if_none_match, bytes) else if_none_match
    candidates = [tag.strip().removeprefix("W/") for tag in text.split(",")]
    return "*" in candidates or etag in candidates

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

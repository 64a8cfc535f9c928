"""Client JSON, read so that it can mean one thing only (docs/guarantees.md, "Bad input gets a
clear error and changes nothing").

A duplicate key (`{"event_type": "accept-all", "event_type": "reject-all"}`), `NaN` or
`Infinity`, or a lone UTF-16 surrogate (which PostgreSQL and the batch serialiser both refuse) is
an error naming where it is, never "the last one wins". jiter (the parser inside pydantic) does
this in one pass, at about a quarter of a microsecond more than a plain parse of an event body.

Every body is read here, by `read_json`: its size is capped before it is read (413) and, since
an endpoint reads it only after its dependencies ran, an admin route checks the API key before a
byte of the body is read or parsed. `StrictJSONRoute` gives any body FastAPI parses the same rules.

A time a client sends, in a body, a query string or a CLI option, is a `Timestamp`: RFC 3339 text
with an offset, never a number of seconds, a date alone or a time in no zone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, TypeVar

import jiter
from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ValidationError
from pydantic_core import PydanticCustomError
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from service.core.errors import (
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
    validation_problem_detail,
)

M = TypeVar("M", bound=BaseModel)
NUL = "\x00"


class InvalidJSON(json.JSONDecodeError):
    """Raised where FastAPI expects the standard library's error (it answers 422 with our text)."""


def loads(body: bytes) -> Any:
    """`body` as JSON; InvalidJSON for anything ambiguous or malformed."""
    try:
        return jiter.from_json(
            body, catch_duplicate_keys=True, allow_inf_nan=False, cache_mode="keys"
        )
    except ValueError as exc:
        raise InvalidJSON(str(exc), body.decode("utf-8", "replace"), 0) from None


async def read_json(
    request: Request,
    model: type[M],
    *,
    limit: int,
    media_types: tuple[str, ...] = ("application/json",),
    headers: dict[bytes, bytes] | None = None,
) -> M:
    """The request's body as `model`: 415 for another media type, 413 past `limit` bytes (before
    reading when the length is declared, while reading when it is not), 422 when invalid.
    `headers` are the raw request headers, when the caller has them as a dict already."""
    headers = headers if headers is not None else dict(request.scope["headers"])
    content_type = headers.get(b"content-type", b"application/json").decode("latin-1")
    media_type = content_type.split(";")[0].strip()
    if media_type.lower() not in media_types:
        raise UnsupportedMediaType(
            f"send the body as {' or '.join(media_types)}, not {media_type[:100]!r}"
        )
    declared = headers.get(b"content-length", b"")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is at most {limit} bytes")
    return parse_body(model, await read_body(request.receive, limit))


async def read_body(receive: Receive, limit: int) -> bytes:
    """The body, read straight from the ASGI messages (the server stops at a declared length;
    a chunked body is counted as it streams)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is at most {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_body(model: type[M], body: bytes) -> M:
    """`body` as `model`, or the 422 problem naming what is wrong."""
    try:
        data = loads(body)
    except InvalidJSON as exc:
        raise Unprocessable(
            f"the body is not valid JSON: {exc.msg}",
            extra={"errors": [{"pointer": "/body", "detail": exc.msg}]},
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail, errors = validation_problem_detail(list(exc.errors()), prefix=("body",))
        raise Unprocessable(detail, extra={"errors": errors}) from None


def no_nul(value: str) -> str:
    """PostgreSQL text cannot hold NUL: refused here, with the field's name, not by the insert."""
    if NUL in value:
        raise ValueError("must not contain the NUL character (\\u0000)")
    return value


TIMESTAMP_FORM = "an RFC 3339 date-time with an offset, such as 2027-01-01T00:00:00Z"
# RFC 3339 section 5.6: full-date "T" full-time, the offset "Z" or +hh:mm / -hh:mm ("T" and "Z" may
# be lower case, its note). ASCII digits only: `\d` would take any script's.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)


def rfc3339(value: object) -> object:
    """`value` as a datetime when it is RFC 3339 date-time text with an offset; an error naming the
    form otherwise (pydantic's lax datetime would read 20270101 or "20270101" as Unix seconds, and
    a date alone as its midnight). A datetime, which only Python code can pass, is left to
    `AwareDatetime`."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        raise PydanticCustomError("rfc3339_datetime", f"Input should be {TIMESTAMP_FORM}")
    try:
        return datetime.fromisoformat(value.upper())
    except ValueError as exc:  # the form, but no such day or time: 2027-02-30, 24:00, second 60
        raise PydanticCustomError(
            "rfc3339_datetime", f"Input should be {TIMESTAMP_FORM}: {{why}}", {"why": str(exc)}
        ) from None


# A client's time, in a body, a query string or a CLI option (JSON schema: string, date-time).
Timestamp = Annotated[AwareDatetime, BeforeValidator(rfc3339)]


class _StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """An APIRoute whose JSON body is read by `loads` (FastAPI's own parse lets the last
    duplicate key win)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictJSONRequest(request.scope, request.receive))

        return strict

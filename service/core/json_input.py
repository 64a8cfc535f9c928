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
with an offset, never a number of seconds, a date alone or a time in no zone. A whole number in a
URL is a `UrlInt` (`3`, never `3.0`, `+3`, `03` or ` 3`), a flag in a query string a `UrlBool`
(`true` or `false`), and a scalar query parameter is given once (`StrictJSONRoute`, and
`core/pipeline.py` for hot routes): one spelling for one value, as in a body. So is an id: a UUID a
client sends is a `CanonicalUUID`, in the one form the service writes.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import jiter
from annotated_types import Interval
from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import (
    BaseModel,
    BeforeValidator,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from service.core.errors import (
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
    validation_problem_detail,
)
from service.core.headers import request_headers
from service.core.query import SingleQueryParams

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
        raise InvalidJSON(_plainly(str(exc), body), body.decode("utf-8", "replace"), 0) from None


_WHERE = re.compile(r" at line (\d+) column (\d+)$")
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _plainly(message: str, body: bytes) -> str:
    """jiter's message, except where it names a symptom rather than what was sent: a lone
    surrogate escape ("unexpected end of hex escape") and NaN or Infinity where a value was
    expected ("expected value", "invalid number")."""
    where = _WHERE.search(message)
    if where is None:
        return message
    at = where.group(0)
    if message.startswith(("unexpected end of hex escape", "lone leading surrogate")) and (
        _SURROGATE.search(body)
    ):
        return (
            f"a lone UTF-16 surrogate escape (\\ud800 to \\udfff without its pair) is not text{at}"
        )
    if message.startswith(("expected value", "invalid number")):
        line, column = int(where.group(1)), int(where.group(2))
        lines = body.split(b"\n")
        if 1 <= line <= len(lines) and column >= 1:
            text = lines[line - 1]
            found = text[column - 1 :]
            if found.startswith((b"NaN", b"Infinity", b"-Infinity")):  # `-` before: at the I
                return f"NaN and Infinity are not JSON numbers{at}"
    return message


async def read_json(
    request: Request,
    model: type[M],
    *,
    limit: int,
    media_types: tuple[str, ...] = ("application/json",),
    headers: dict[bytes, bytes] | None = None,
) -> M:
    """The request's body as `model`: 415 for another media type or a charset other than UTF-8,
    413 past `limit` bytes (before reading when the length is declared, while reading when it is
    not), 422 when invalid. No Content-Type is read as JSON (a beacon is not lost for it).
    `headers` are the raw request headers, when the caller has them as a dict already."""
    headers = headers if headers is not None else request_headers(request.scope["headers"])
    coding = headers.get(b"content-encoding")
    if coding is not None and coding.strip().lower() not in (b"", b"identity"):
        raise UnsupportedMediaType(
            f"send the body uncompressed: Content-Encoding "
            f"{coding.decode('latin-1')[:100]!r} is not read"
        )
    content_type = headers.get(b"content-type", b"application/json").decode("latin-1")
    media_type, _, parameters = content_type.partition(";")
    media_type = media_type.strip()
    if media_type.lower() not in media_types:
        raise UnsupportedMediaType(
            f"send the body as {' or '.join(media_types)}, not {media_type[:100]!r}"
        )
    # What browsers send (sendBeacon's `text/plain;charset=UTF-8`) is one set look-up; only
    # other parameters are parsed.
    if parameters and parameters.lower() not in UTF8_PARAMETERS:
        _check_parameters(content_type, parameters)
    declared = headers.get(b"content-length", b"")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is at most {limit} bytes")
    return parse_body(model, await read_body(request.receive, limit))


# JSON is UTF-8 (RFC 8259, section 8.1), and so is the text/plain of `sendBeacon`: a body sent as
# another charset would be read as something its sender did not write.
UTF8_PARAMETERS = frozenset({"charset=utf-8", " charset=utf-8"})
# RFC 9110, section 8.3.1: parameters = *( OWS ";" OWS [ parameter ] ), parameter = name "=" (token
# / quoted-string); names and the charset's value are case-insensitive. Matched one at a time,
# after the media type's first ";".
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_PARAMETER = re.compile(rf"[ \t]*(?:({_TCHARS})=({_TCHARS}|{_QUOTED}))?[ \t]*(?:;|\Z)")
_QUOTED_PAIR = re.compile(r"\\(.)")


def _check_parameters(content_type: str, parameters: str) -> None:
    """415 unless `parameters` are media-type parameters whose charset, if any, is UTF-8."""
    position = 0
    while position < len(parameters):
        match = _PARAMETER.match(parameters, position)
        if match is None:
            raise UnsupportedMediaType(
                f"the Content-Type {content_type[:100]!r} is not a media type with "
                "name=value parameters (RFC 9110, section 8.3.1)"
            )
        name, value = match.group(1, 2)
        if name is not None and name.lower() == "charset":
            if value.startswith('"'):
                value = _QUOTED_PAIR.sub(r"\1", value[1:-1])
            if value.lower() != "utf-8":
                raise UnsupportedMediaType(
                    f"send the body in UTF-8 (charset=utf-8, or no charset), not charset "
                    f"{value[:100]!r}"
                )
        position = match.end()


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


# What text a person reads as evidence may not hold: controls (C0, DEL, C1), and Unicode's
# invisible formatting characters: soft hyphen, bidi marks, embeddings, overrides and isolates,
# zero-width characters, line and paragraph separators. Raw, they hide or reorder what a person
# reading an export or the audit log sees (U+202E turns the text after it around).
UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064"
    "\u2066-\u206f\ufeff\ufff9-\ufffb]"
)


def one_spelling(value: str) -> str:
    """Text that names something (a DSR ticket): refused, not tidied, when it is blank, has
    white space around it or holds a character from `UNPRINTABLE`. Tidied, "T-1 " would be a
    second key for "T-1" beside the ones stored already; kept, it would read as "T-1" in the
    audit while being another."""
    if not value.strip():
        raise ValueError("must not be blank")
    if value != value.strip():
        raise ValueError("must not begin or end with white space")
    if UNPRINTABLE.search(value):
        raise ValueError("must not contain control or invisible formatting characters")
    return value


INT4_MAX = 2_147_483_647  # PostgreSQL's `integer`, the type of every number a URL names
URL_INT_FORM = "a whole number in decimal digits, such as 3, with no sign, space or leading zero"
_DECIMAL = re.compile(r"0|[1-9][0-9]*")  # ASCII digits only: `\d` and int() take any script's


def decimal_text(value: object) -> object:
    """`value` as an int when it is the canonical decimal text of one; an error naming the form
    otherwise (pydantic's lax int reads `1.0`, `+1`, `01`, ` 1` and `1_0` as numbers, so one
    resource would have many URLs). An int, which only Python code can pass, is left to `int`."""
    if not isinstance(value, str):
        return value
    if _DECIMAL.fullmatch(value) is None:
        raise PydanticCustomError("url_int", f"Input should be {URL_INT_FORM}")
    if len(value) > len(str(INT4_MAX)):  # int() of thousands of digits is slow, then refused
        raise PydanticCustomError(
            "less_than_equal", "Input should be less than or equal to {le}", {"le": INT4_MAX}
        )
    return int(value)


# A whole number in a path or a query string: 1 to PostgreSQL's integer maximum (JSON schema:
# integer, with both bounds). Narrower bounds go in an alias of their own, before the validator:
# pydantic documents a bound declared after a before-validator (`Path(le=…)`) as `le`, not
# `maximum`.
UrlInt = Annotated[int, Interval(ge=1, le=INT4_MAX), BeforeValidator(decimal_text)]


def flag_text(value: object) -> object:
    """`true` or `false`, as JSON spells them and the browser client sends them; pydantic's lax
    bool would also read `1`, `yes`, `on`, `T`…"""
    if value == "true":
        return True
    if value == "false":
        return False
    if isinstance(value, bool):  # from Python code
        return value
    raise PydanticCustomError("url_bool", "Input should be true or false")


# A flag in a query string (JSON schema: boolean).
UrlBool = Annotated[bool, BeforeValidator(flag_text)]


UUID_FORM = (
    "a UUID in lowercase 8-4-4-4-12 form, as crypto.randomUUID() writes it, such as "
    "0b9f6f7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
)
# What `str(uuid.UUID)` writes (docs/evidence.md, "The leaf") and the banner
# sends: 36 characters, ASCII lowercase hex (`$` is the end of the text in pydantic's Rust regex).
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class _UUIDText:
    """pydantic's uuid.UUID also reads upper case, 32 bare hex digits, `{…}` and `urn:uuid:` as
    the same id: one person would have several spellings in the requests and logs that an
    auditor reads. The text is matched and converted inside pydantic-core, with no Python call:
    0.2 µs more than uuid.UUID for an event body with one id (`ConsentEventIn.model_validate`,
    2.0 µs), where a Python validator adds 0.5 µs and a pattern then `uuid.UUID()` 1.4 µs. A
    uuid.UUID, which only Python code can pass, is taken as it is."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        text = core_schema.str_schema(pattern=UUID_PATTERN, strict=True)
        either = core_schema.union_schema(
            [
                core_schema.chain_schema([text, core_schema.uuid_schema()]),
                core_schema.is_instance_schema(uuid.UUID),
            ],
            mode="left_to_right",
        )
        # Any failure (a number, a list, another spelling) is this one message.
        return core_schema.custom_error_schema(
            either,
            custom_error_type="uuid_form",
            custom_error_message=f"Input should be {UUID_FORM}",
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # The text's schema (a string and the pattern; the UUID a Python caller may pass has none),
        # with whatever the field adds (a description).
        return {"type": "string", "format": "uuid", **handler(schema)}


# An id a client sends, in a body, a path or a CLI option (JSON schema: string, uuid, the pattern).
CanonicalUUID = Annotated[uuid.UUID, _UUIDText()]


class _StrictJSONRequest(Request):
    @property
    def query_params(self) -> QueryParams:
        if not hasattr(self, "_query_params"):
            self._query_params = SingleQueryParams(self.scope["query_string"])
        return self._query_params

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """An APIRoute whose JSON body is read by `loads` (FastAPI's own parse lets the last
    duplicate key win), and whose scalar query parameters are given once (FastAPI's own takes the
    last)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictJSONRequest(request.scope, request.receive))

        return strict

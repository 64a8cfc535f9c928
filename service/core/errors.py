"""Domain errors and their one rendering: RFC 9457 `application/problem+json`.

Every error a client can see goes through `problem_response`, so the shape never varies and no stack
trace ever leaves the process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.core.logging import get_logger

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://consent-service.dev/problems/"
RETRY_AFTER = "5"  # seconds: the writer's longest wait between attempts to reconnect

log = get_logger("service.errors")


class ConsentServiceError(Exception):
    """Base of every error a client can cause; the subclass decides status and problem type."""

    status = 500
    slug = "internal-error"
    title = "Internal server error"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}


class BadRequest(ConsentServiceError):
    status, slug, title = 400, "bad-request", "Bad request"


class Unauthorized(ConsentServiceError):
    status, slug, title = 401, "unauthorized", "Missing or invalid API key"


class Forbidden(ConsentServiceError):
    status, slug, title = 403, "forbidden", "The API key lacks the required scope"


class OriginNotAllowed(ConsentServiceError):
    status, slug, title = 403, "origin-not-allowed", "A browser on this site may not write here"


class NotFound(ConsentServiceError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(ConsentServiceError):
    status, slug, title = 409, "conflict", "Conflict"


class ReferenceConflict(Conflict):
    """A DSR reference already names another request: a retry must repeat it exactly
    (docs/policies.md, "Retries")."""

    status, slug, title = 409, "reference-conflict", "The reference names another request"


class MaterialChange(Conflict):
    """A version published as non-material changes more than wording: it must be material, so
    that the banner asks everyone again (docs/policies.md, "Material and non-material versions")."""

    status, slug, title = 409, "material-change", "The change needs a material version"


class PayloadTooLarge(ConsentServiceError):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class UnsupportedMediaType(ConsentServiceError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class Unprocessable(ConsentServiceError):
    status, slug, title = 422, "validation-error", "The request is invalid"


class TooManyRequests(ConsentServiceError):
    status, slug, title = 429, "too-many-requests", "Too many requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class ServiceUnavailable(ConsentServiceError):
    status, slug, title = 503, "unavailable", "Service unavailable"


class OutcomeUnknown(ConsentServiceError):
    """The database took the write but did not confirm it: it may or may not be stored."""

    status, slug, title = 503, "outcome-unknown", "The outcome is unknown"


class InvalidParam(BaseModel):
    """One invalid field: where it is (a JSON pointer into the request) and what is wrong."""

    pointer: str = Field(examples=["/body/categories/analytics"])
    detail: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(examples=[PROBLEM_BASE + "validation-error"])
    title: str
    status: int
    detail: str
    instance: str | None = Field(default=None, description="The request id, as `urn:request:<id>`.")
    errors: list[InvalidParam] | None = None


_STATUS_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Missing or invalid API key"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation-error", "The request is invalid"),
    429: ("too-many-requests", "Too many requests"),
    503: ("unavailable", "Service unavailable"),
}


def problem_response(
    *,
    status: int,
    slug: str,
    title: str,
    detail: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id:
        body["instance"] = f"urn:request:{request_id}"
    body.update(extra or {})
    # An error answers one request at one moment: no cache keeps it (a 404 is cacheable by
    # default), and none keeps what a DSR error may echo.
    headers = {"Cache-Control": "no-store", **(headers or {})}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def json_pointer(loc: tuple[int | str, ...]) -> str:
    """RFC 6901: each part with `~` as `~0` and `/` as `~1`."""
    if loc and loc[-1] == "[key]":  # pydantic's mark of an invalid key: point at its member
        loc = loc[:-1]
    return "/" + "/".join(str(part).replace("~", "~0").replace("/", "~1") for part in loc)


# What a field whose value does not match its pattern must be, in words: the regular expression
# itself is no message for a person (registered by the module that defines the pattern).
PATTERN_WORDS: dict[str, str] = {}
# pydantic's kinds of "not an object" (its message would name the model's Python class).
_NOT_AN_OBJECT = frozenset({"model_type", "model_attributes_type", "dict_type"})


def plain_message(error: Mapping[str, Any]) -> str:
    """A pydantic error's message in the service's words, for the API and the CLI alike: the
    service's own validators' sentences without pydantic's "Value error, " before them, an object
    named as JSON's, a pattern in words where one is registered."""
    kind, message = error.get("type"), str(error.get("msg", ""))
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if kind in _NOT_AN_OBJECT:
        return "must be a JSON object"
    if kind == "string_pattern_mismatch":
        words = PATTERN_WORDS.get(str(error.get("ctx", {}).get("pattern")))
        if words is not None:
            return f"must be {words}"
    return message


def validation_problem_detail(
    errors: list[Any], prefix: tuple[str, ...] = ()
) -> tuple[str, list[dict[str, str]]]:
    """A one-line summary and the per-field list of pydantic errors, as JSON pointers."""
    invalid = [
        {"pointer": "/body", "detail": f"not valid JSON: {error['ctx']['error']}"}
        if error.get("type") == "json_invalid" and "error" in error.get("ctx", {})
        else {
            "pointer": json_pointer((*prefix, *tuple(error.get("loc", ())))),
            "detail": plain_message(error),
        }
        for error in errors
    ]
    return "; ".join(f"{item['pointer']}: {item['detail']}" for item in invalid), invalid


def validation_problem(errors: list[Any]) -> JSONResponse:
    summary, invalid = validation_problem_detail(errors)
    return problem_response(
        status=422,
        slug="validation-error",
        title="The request is invalid",
        detail=summary or "The request is invalid",
        extra={"errors": invalid},
    )


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConsentServiceError)
    headers = (
        {"WWW-Authenticate": "Bearer"}
        if exc.status == 401
        else {"Retry-After": RETRY_AFTER}
        if exc.status == 503
        else {"Retry-After": str(exc.retry_after)}
        if isinstance(exc, TooManyRequests)
        else None
    )
    return problem_response(
        status=exc.status,
        slug=exc.slug,
        title=exc.title,
        detail=exc.detail,
        extra=exc.extra,
        headers=headers,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_problem(list(exc.errors()))


def allowed_methods(allow: str) -> str:
    """A 405's `Allow`, in a fixed order, with HEAD wherever GET is: every GET route answers HEAD
    (RFC 9110, section 9.3.2; core/pipeline.py `HeadAsGet`), but FastAPI's routes list only the
    methods they declare, and Starlette's list theirs in a set's order."""
    methods = {method.strip() for method in allow.split(",") if method.strip()}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug, title = _STATUS_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) else title
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 404 and detail == "Not Found":
        detail = "No such resource"
    elif exc.status_code == 405 and headers and "Allow" in headers:
        headers["Allow"] = allowed_methods(headers["Allow"])
        detail = f"{request.method} is not allowed here; allowed: {headers['Allow']}"
    return problem_response(
        status=exc.status_code, slug=slug, title=title, detail=detail, headers=headers
    )


def log_unexpected(exc: BaseException) -> None:
    # Logged with its traceback for operators; the client gets the request id and nothing else.
    log.error("unhandled_exception", exc_type=type(exc).__name__, exc_info=exc)


def internal_error_response() -> JSONResponse:
    return problem_response(
        status=500,
        slug="internal-error",
        title="Internal server error",
        detail="An unexpected error occurred; quote the request id when reporting it.",
    )


def install_error_handlers(app: FastAPI) -> None:
    """The handlers of the service's own errors; the database's are core/db_errors.py's."""
    app.add_exception_handler(ConsentServiceError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


# For OpenAPI: the error responses each route can give. Each is the problem document the app sends,
# under the one media type it sends it as; no `"model"` key, which would document it as
# `application/json` too (`ConsentAPI.openapi` in core/pipeline.py adds `problem_schemas`).
PROBLEM_SCHEMA_REF = "#/components/schemas/Problem"
RETRY_AFTER_DOC = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer"},
    }
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: problem_response_doc(status) for status in statuses}


def problem_response_doc(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _STATUS_SLUGS.get(status, ("", "Error"))[1],
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": PROBLEM_SCHEMA_REF}}},
    }
    if status in (429, 503):  # both always say when to try again (`_domain_error`, db_errors.py)
        response["headers"] = RETRY_AFTER_DOC
    return response


def problem_schemas() -> dict[str, Any]:
    """`Problem`'s JSON Schema and those it refers to, by name, for the document's components."""
    schema = Problem.model_json_schema(
        ref_template="#/components/schemas/{model}", mode="serialization"
    )
    return {**schema.pop("$defs", {}), "Problem": schema}

"""Banner-facing reads of the consent schema, and publishing for admins."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response, status

from service.auth.dependencies import SchemaWriter
from service.consent_schema.bodies import (
    PropertyName,
    PublishRequest,
    SchemaVersionList,
    SchemaVersionOut,
    SchemaVersionSummary,
    VersionNumber,
)
from service.consent_schema.publishing import cancel, cancelled_versions, publish
from service.consent_schema.service import (
    PropertyState,
    PublishedVersion,
    list_versions,
    property_state,
)
from service.core.errors import Unprocessable, problem_responses
from service.core.headers import etag_matches
from service.core.json_input import StrictJSONRoute, read_json
from service.core.pipeline import body_read_by_hand, hot
from service.state import Catalog, Session

router = APIRouter(
    prefix="/v1/properties/{property}/schema", tags=["consent schema"], route_class=StrictJSONRoute
)

CURRENT_MAX_AGE = 60
CURRENT_CACHE = f"public, max-age={CURRENT_MAX_AGE}"
IMMUTABLE_CACHE = "public, max-age=31536000, immutable"
# The two real policies' schemas are under 4 KB each; a site with hundreds of cookies stays far
# below this. Read only after the key was checked.
MAX_PUBLISH_BYTES = 256 * 1024


def _version_response(
    version: PublishedVersion, if_none_match: str | None, cache_control: str
) -> Response:
    headers = {"ETag": version.etag(), "Cache-Control": cache_control}
    if etag_matches(if_none_match, version.etag()):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(version.body, media_type="application/json", headers=headers)


@router.get(
    "",
    summary="The current consent schema version",
    response_model=SchemaVersionOut,
    responses={
        304: {"description": "Not modified (If-None-Match)"},
        **problem_responses(404, 422, 503),
    },
)
@hot
async def get_current_schema(
    property: PropertyName,
    catalog: Catalog,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    state = await catalog.state(property)
    version = await catalog.version(property, state.current_version)
    return _version_response(version, if_none_match, _current_cache(state))


def _current_cache(state: PropertyState) -> str:
    """What may keep an answer naming the current version: a minute, or less when a version
    takes effect sooner, so no cache keeps it past that instant."""
    until_change = state.seconds_until_change(datetime.now(UTC))
    if until_change is not None and until_change < CURRENT_MAX_AGE:
        return f"public, max-age={int(until_change)}"
    return CURRENT_CACHE


@router.get(
    "/versions",
    summary="Every published version of a property's consent schema",
    response_model=SchemaVersionList,
    responses=problem_responses(404, 422, 503),
)
async def get_versions(
    property: PropertyName, session: Session, response: Response
) -> SchemaVersionList:
    versions = await list_versions(session, property)
    state = await property_state(session, property)
    response.headers["Cache-Control"] = _current_cache(state)
    return SchemaVersionList(
        property=property,
        current_version=state.current_version,
        last_material_version=state.last_material_version,
        pending_version=state.pending.version if state.pending else None,
        cancelled_versions=sorted(await cancelled_versions(session, property)),
        items=[SchemaVersionSummary.model_validate(version.summary()) for version in versions],
    )


@router.get(
    "/versions/{version}",
    summary="One consent schema version (immutable)",
    response_model=SchemaVersionOut,
    responses={
        304: {"description": "Not modified (If-None-Match)"},
        **problem_responses(404, 422, 503),
    },
)
@hot
async def get_version(
    property: PropertyName,
    version: VersionNumber,
    catalog: Catalog,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    published = await catalog.version(property, version)
    return _version_response(published, if_none_match, IMMUTABLE_CACHE)


@router.post(
    "/versions",
    summary="Publish a new consent schema version",
    status_code=status.HTTP_201_CREATED,
    response_model=SchemaVersionOut,
    responses={
        200: {
            "model": SchemaVersionOut,
            "description": "Unchanged content: the version that has it (in force, or pending "
            "from the same effective_at)",
        },
        **problem_responses(400, 401, 403, 409, 413, 415, 422, 429, 503),
    },
)
@body_read_by_hand(PublishRequest)
async def publish_version(
    property: PropertyName,
    request: Request,
    session: Session,
    catalog: Catalog,
    principal: SchemaWriter,
) -> Response:
    body = await read_json(request, PublishRequest, limit=MAX_PUBLISH_BYTES)
    if body.content.property != property:
        raise Unprocessable(
            f"content.property is {body.content.property!r} but the URL names {property!r}",
            extra={"errors": [{"pointer": "/body/content/property", "detail": "must match URL"}]},
        )
    published, created = await publish(
        session,
        body.content,
        material=body.material,
        published_by=principal.key_id,
        effective_at=body.effective_at,
    )
    await session.commit()
    catalog.forget_current(property)
    location = f"/v1/properties/{property}/schema/versions/{published.version}"
    return Response(
        published.body,
        status_code=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        media_type="application/json",
        headers={"Location": location, "ETag": published.etag(), "Cache-Control": "no-store"},
    )


@router.post(
    "/versions/{version}/cancellation",
    summary="Cancel a version before it takes effect",
    response_model=SchemaVersionOut,
    responses=problem_responses(401, 403, 404, 409, 422, 429, 503),
)
async def cancel_version(
    property: PropertyName,
    version: VersionNumber,
    session: Session,
    catalog: Catalog,
    principal: SchemaWriter,
) -> Response:
    cancelled = await cancel(session, property, version, cancelled_by=principal.key_id)
    await session.commit()
    catalog.forget_current(property)
    return Response(
        cancelled.body, media_type="application/json", headers={"Cache-Control": "no-store"}
    )

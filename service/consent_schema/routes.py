"""Banner-facing reads of the consent schema, and publishing for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Request, Response, status
from pydantic import BaseModel, Field

from service.auth.keys import Principal, Scope, require_scope
from service.consent_schema.document import PROPERTY_PATTERN, ConsentSchemaDocument
from service.consent_schema.versions import PublishedVersion, SchemaCatalog, list_versions, publish
from service.core.db import Session
from service.core.errors import Unprocessable, problem_responses
from service.core.hot_routes import hot

router = APIRouter(prefix="/v1/properties/{property}/schema", tags=["consent schema"])

CURRENT_CACHE = "public, max-age=60"
IMMUTABLE_CACHE = "public, max-age=31536000, immutable"

PropertyName = Annotated[
    str, Path(pattern=PROPERTY_PATTERN, description="The property (site or app), e.g. `itsailor`.")
]


class SchemaVersionSummary(BaseModel):
    property: str
    version: int = Field(description="1, 2, 3 … per property.")
    material: bool = Field(description="Whether this version required asking everyone again.")
    published_at: datetime
    content_hash: str = Field(description="SHA-256 (hex) of the canonical JSON of `content`.")
    last_material_version: int = Field(
        description="The newest material version up to this one: a banner holding a decision "
        "made on an older version must ask again."
    )

    @classmethod
    def of(cls, version: PublishedVersion) -> SchemaVersionSummary:
        return cls(
            property=version.property,
            version=version.version,
            material=version.material,
            published_at=version.published_at,
            content_hash=version.content_hash,
            last_material_version=version.last_material_version,
        )


class SchemaVersionOut(SchemaVersionSummary):
    content: ConsentSchemaDocument


class SchemaVersionList(BaseModel):
    property: str
    current_version: int
    last_material_version: int
    items: list[SchemaVersionSummary]


class PublishRequest(BaseModel):
    material: bool = Field(
        default=True,
        description="Material (the default) re-prompts everyone; non-material is wording only.",
    )
    content: ConsentSchemaDocument


async def get_catalog(request: Request) -> SchemaCatalog:  # async: no thread hop per request
    catalog: SchemaCatalog = request.app.state.catalog
    return catalog


Catalog = Annotated[SchemaCatalog, Depends(get_catalog)]


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in candidates or etag in candidates


def _version_response(
    version: PublishedVersion, if_none_match: str | None, cache_control: str
) -> Response:
    headers = {"ETag": version.etag(), "Cache-Control": cache_control}
    if _matches(if_none_match, version.etag()):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(version.body, media_type="application/json", headers=headers)


@router.get(
    "",
    summary="The current consent schema version",
    response_model=SchemaVersionOut,
    responses={304: {"description": "Not modified (If-None-Match)"}, **problem_responses(404, 422)},
)
@hot
async def get_current_schema(
    property: PropertyName,
    request: Request,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    catalog: SchemaCatalog = request.app.state.catalog
    version = await catalog.current(property)
    return _version_response(version, if_none_match, CURRENT_CACHE)


@router.get(
    "/versions",
    summary="Every published version of a property's consent schema",
    response_model=SchemaVersionList,
    responses=problem_responses(404, 422),
)
async def get_versions(
    property: PropertyName, session: Session, response: Response
) -> SchemaVersionList:
    versions = await list_versions(session, property)
    response.headers["Cache-Control"] = CURRENT_CACHE
    return SchemaVersionList(
        property=property,
        current_version=versions[-1].version,
        last_material_version=versions[-1].last_material_version,
        items=[SchemaVersionSummary.of(version) for version in versions],
    )


@router.get(
    "/versions/{version}",
    summary="One consent schema version (immutable)",
    response_model=SchemaVersionOut,
    responses={304: {"description": "Not modified (If-None-Match)"}, **problem_responses(404, 422)},
)
@hot
async def get_version(
    property: PropertyName,
    version: Annotated[int, Path(ge=1, le=2_147_483_647)],
    request: Request,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    catalog: SchemaCatalog = request.app.state.catalog
    published = await catalog.version(property, version)
    return _version_response(published, if_none_match, IMMUTABLE_CACHE)


@router.post(
    "/versions",
    summary="Publish a new consent schema version",
    status_code=status.HTTP_201_CREATED,
    response_model=SchemaVersionOut,
    responses={
        200: {"model": SchemaVersionOut, "description": "Unchanged content: the current version"},
        **problem_responses(401, 403, 422),
    },
)
async def publish_version(
    property: PropertyName,
    body: PublishRequest,
    session: Session,
    catalog: Catalog,
    principal: Annotated[Principal, Depends(require_scope(Scope.SCHEMAS_WRITE))],
) -> Response:
    if body.content.property != property:
        raise Unprocessable(
            f"content.property is {body.content.property!r} but the URL names {property!r}",
            extra={"errors": [{"pointer": "/body/content/property", "detail": "must match URL"}]},
        )
    published, created = await publish(
        session, body.content, material=body.material, published_by=principal.key_id
    )
    await session.commit()
    catalog.forget_current(property)
    location = f"/v1/properties/{property}/schema/versions/{published.version}"
    return Response(
        published.body,
        status_code=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        media_type="application/json",
        headers={"Location": location, "ETag": published.etag()},
    )

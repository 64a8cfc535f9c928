"""Request and response bodies of the consent schema API (the schema file's own format is
`document.py`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from service.consent_schema.document import PROPERTY_PATTERN, ConsentSchemaDocument
from service.core.json_input import UrlInt
from service.core.times import Timestamp

PropertyName = Annotated[
    str, Path(pattern=PROPERTY_PATTERN, description="The property (site or app), e.g. `itsailor`.")
]
VersionNumber = Annotated[
    UrlInt, Path(description="The version number, in decimal digits: `3`, not `03` or `3.0`.")
]


class SchemaVersionSummary(BaseModel):
    property: str
    version: int = Field(description="1, 2, 3 … per property.")
    material: StrictBool = Field(description="Whether this version required asking everyone again.")
    published_at: datetime
    effective_at: datetime = Field(
        description="When it takes (or took) effect: its publication, or the announced time."
    )
    content_hash: str = Field(description="SHA-256 (hex) of the canonical JSON of `content`.")
    last_material_version: int = Field(
        description="The newest material version up to this one: a banner holding a decision "
        "made on an older version must ask again."
    )


class SchemaVersionOut(SchemaVersionSummary):
    content: ConsentSchemaDocument


class SchemaVersionList(BaseModel):
    property: str
    current_version: int = Field(description="The version in force now.")
    last_material_version: int
    pending_version: int | None = Field(
        description="A version published to take effect later (its `effective_at`), if any."
    )
    cancelled_versions: list[int] = Field(
        description="Versions cancelled before they took effect (never served as current)."
    )
    items: list[SchemaVersionSummary]


class PublishRequest(BaseModel):
    # A misspelt `material` or `effective_at` must not publish a material version in force now:
    # a version can be neither changed nor withdrawn once it is (docs/policies.md).
    model_config = ConfigDict(extra="forbid")

    material: StrictBool = Field(
        default=True,
        description="Material (the default) re-prompts everyone; non-material is wording only: "
        "one that changes more (a category, a cookie, the choice lifetime, the signals…) is 409 "
        "`material-change`.",
    )
    content: ConsentSchemaDocument
    effective_at: Timestamp | None = Field(
        default=None,
        description="Take effect at this time instead of now (RFC 3339): until then the "
        "version in force stays current, and the new one is listed as pending.",
    )

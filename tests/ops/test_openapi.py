"""The committed OpenAPI document is the app's: a route changed without regenerating it fails."""

from __future__ import annotations

import json
from pathlib import Path

from service.openapi import render_file_schema, render_openapi

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "openapi" / "openapi.json"
FILE_SCHEMA = ROOT / "examples" / "schemas" / "consent-schema.schema.json"


def test_committed_openapi_matches_the_app() -> None:
    assert COMMITTED.read_text() == render_openapi(), (
        "openapi/openapi.json is out of date: run `uv run consent-service openapi` and commit it"
    )


def test_committed_schema_file_json_schema_matches_the_model() -> None:
    assert FILE_SCHEMA.read_text() == render_file_schema(), (
        f"{FILE_SCHEMA.name} is out of date: run `uv run consent-service openapi` and commit it"
    )


def test_every_operation_documents_its_errors_and_tags() -> None:
    document = json.loads(COMMITTED.read_text())
    assert document["info"]["title"] == "Consent record service"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation.get("tags"), f"{method.upper()} {path} has no tag"
            assert operation.get("summary"), f"{method.upper()} {path} has no summary"

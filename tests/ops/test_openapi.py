"""The committed OpenAPI document is the app's: a route changed without regenerating it fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app as cli
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


def test_the_document_needs_no_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendered from fixed settings: a bad or missing configuration changes nothing."""
    monkeypatch.delenv("CONSENT_DATABASE_URL", raising=False)
    monkeypatch.setenv("CONSENT_TRUSTED_PROXIES", "notacidr")
    monkeypatch.setenv("CONSENT_ENV", "production")
    assert render_openapi() == COMMITTED.read_text()


def test_checking_where_there_is_no_document_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["openapi", "--check", "--output", str(tmp_path / "openapi.json")]
    )
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'openapi.json'} does not exist: --check compares the committed "
        "documents of a checkout; run it in the repository (without --check it writes them here)"
    ]

"""The committed API documents: `openapi/openapi.json` and the consent schema file's JSON Schema."""

from __future__ import annotations

import json

from service.app import create_app
from service.consent_schema.document import json_schema
from service.core.config import Settings


def render_openapi() -> str:
    # Fixed settings: the document must not depend on the machine that renders it.
    app = create_app(Settings(_env_file=None, cors_origins=[]))
    return json.dumps(app.openapi(), indent=2, sort_keys=False) + "\n"


def render_file_schema() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"

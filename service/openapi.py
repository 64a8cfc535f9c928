"""The committed API documents: `openapi/openapi.json` and the consent schema file's JSON Schema."""

from __future__ import annotations

import json

from pydantic import SecretStr

from service.app import create_app
from service.consent_schema.document import json_schema
from service.core.config import Settings

RENDER_URL = "postgresql://openapi@localhost/never-connected"


def render_openapi() -> str:
    # Fixed settings, not read from the environment: the document must not depend on the machine
    # that renders it, nor need a database or a valid configuration (nothing is connected).
    app = create_app(Settings.model_construct(database_url=SecretStr(RENDER_URL)))
    return json.dumps(app.openapi(), indent=2, sort_keys=False) + "\n"


def render_file_schema() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"

"""The OpenAPI document as committed in `openapi/openapi.json`."""

from __future__ import annotations

import json

from service.app import create_app
from service.core.config import Settings


def render_openapi() -> str:
    # Fixed settings: the document must not depend on the machine that renders it.
    app = create_app(Settings(_env_file=None, cors_origins=[]))
    return json.dumps(app.openapi(), indent=2, sort_keys=False) + "\n"

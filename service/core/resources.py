"""Where the files the code needs besides itself are: the migrations and the example schemas.

They are written in the repository's top-level `alembic/` and `examples/schemas/`; a built wheel
carries copies inside the package (`service/_migrations`, `service/_examples`, see
pyproject.toml), so an installed `consent-service` migrates and publishes from any folder.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
CHECKOUT = PACKAGE.parent  # the repository, when running from a source checkout


def _first(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[-1]


# The packaged copy first: in a wheel, the folder above the package is site-packages, where
# `alembic` is the Alembic library itself.
MIGRATIONS_DIR = _first(PACKAGE / "_migrations", CHECKOUT / "alembic")
EXAMPLE_SCHEMAS = _first(PACKAGE / "_examples", CHECKOUT / "examples" / "schemas")


def in_checkout() -> bool:
    """Running from the repository (where the committed API documents live)."""
    return (CHECKOUT / "pyproject.toml").is_file() and (CHECKOUT / "alembic" / "env.py").is_file()


@dataclass(frozen=True, slots=True)
class StaticFile:
    """A file the service serves as it is (the browser client, the console), read once."""

    body: bytes
    media_type: str
    etag: str  # quoted, from the content: it changes exactly when the file does


def static_file(path: Path, media_type: str) -> StaticFile:
    body = path.read_bytes()
    return StaticFile(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')

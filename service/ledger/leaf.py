"""An event's leaf in the tamper-evident ledger (docs/evidence.md, "The leaf").

The leaf's data is the event's canonical record: a JSON object of every written column but the
ledger's own (`event.LEAF_COLUMNS`), plus `content_hash` (the schema version the banner showed),
`salt` (hex) and `v` (1), with keys sorted at every level, no whitespace, UTF-8, times in RFC 3339
UTC with a `Z`. The leaf is `SHA-256(0x00 ‖ data)`. The salt is 16 random bytes kept with the
event, so a leaf cannot be confirmed against a guessed record; anonymisation clears it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from service.ledger.event import LEAF_COLUMNS, NewEvent
from service.ledger.merkle import leaf_hash

SALT_BYTES = 16
LEAF_VERSION = 1
_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z


def _text(value: object) -> str:
    """What orjson does not write itself: asyncpg's own UUID type (a uuid.UUID subclass)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(type(value).__name__)


def leaf_data(columns: Mapping[str, Any], content_hash: str, salt: bytes) -> bytes:
    """The canonical record of an event, from its LEAF_COLUMNS (a row or a NewEvent's fields)."""
    document = {name: columns[name] for name in LEAF_COLUMNS}
    document["content_hash"] = content_hash
    document["salt"] = salt.hex()
    document["v"] = LEAF_VERSION
    return orjson.dumps(document, option=_CANONICAL, default=_text)


def attach_leaf(event: NewEvent, content_hash: str) -> NewEvent:
    """Give `event` its salt and leaf (every path that stores an event calls this)."""
    event.salt = os.urandom(SALT_BYTES)
    columns = {name: getattr(event, name) for name in LEAF_COLUMNS}
    event.leaf = leaf_hash(leaf_data(columns, content_hash, event.salt))
    return event

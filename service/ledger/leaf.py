"""An event's leaf in the tamper-evident ledger (docs/evidence.md, "The leaf").

Two canonical JSON documents (keys sorted at every level, no whitespace, UTF-8; see
docs/evidence.md for every rule):

    identity = SHA-256({the identifying columns (IDENTITY_COLUMNS), "salt": hex})
    data     = {the other written columns (RECORD_LEAF_COLUMNS), "content_hash": hex,
                "identity": hex, "v": 2}
    leaf     = SHA-256(0x00 ‖ data)

The salt (16 random bytes) makes `identity` impossible to confirm against guessed identifiers.
Anonymisation clears the identifying columns and the salt but keeps `identity`: the leaf of an
anonymised event is still recomputed from what remains, so its choices stay protected.
"""

from __future__ import annotations

import hashlib
import operator
import os
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from service.ledger.event import IDENTITY_COLUMNS, RECORD_LEAF_COLUMNS, NewEvent
from service.ledger.merkle import leaf_hash

SALT_BYTES = 16
LEAF_VERSION = 2
_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z


def _text(value: object) -> str:
    """What orjson does not write itself: asyncpg's own UUID type (a uuid.UUID subclass)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(type(value).__name__)


def _canonical(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document, option=_CANONICAL, default=_text)


def identity_digest(columns: Mapping[str, Any], salt: bytes) -> bytes:
    """SHA-256 of the identifying columns with the salt."""
    document = {name: columns[name] for name in IDENTITY_COLUMNS}
    document["salt"] = salt.hex()
    return hashlib.sha256(_canonical(document)).digest()


def leaf_data(columns: Mapping[str, Any], content_hash: str, identity: bytes) -> bytes:
    """The canonical record of an event, from its columns (a row or a NewEvent's fields)."""
    document = {name: columns[name] for name in RECORD_LEAF_COLUMNS}
    document["content_hash"] = content_hash
    document["identity"] = identity.hex()
    document["v"] = LEAF_VERSION
    return _canonical(document)


_IDENTITY = operator.attrgetter(*IDENTITY_COLUMNS)
_RECORD = operator.attrgetter(*RECORD_LEAF_COLUMNS)


def attach_leaf(event: NewEvent, content_hash: str) -> NewEvent:
    """Give `event` its salt, identity and leaf (every path that stores an event calls this).
    The documents are identity_digest's and leaf_data's, built straight from the event (this runs
    on every request; tests/ledger/test_ledger.py recomputes both the documented way)."""
    salt = event.salt = os.urandom(SALT_BYTES)
    document = dict(zip(IDENTITY_COLUMNS, _IDENTITY(event), strict=True))
    document["salt"] = salt.hex()
    identity = event.identity = hashlib.sha256(_canonical(document)).digest()
    document = dict(zip(RECORD_LEAF_COLUMNS, _RECORD(event), strict=True))
    document["content_hash"] = content_hash
    document["identity"] = identity.hex()
    document["v"] = LEAF_VERSION
    event.leaf = leaf_hash(_canonical(document))
    return event

"""Fixtures of the ledger's tests."""

from __future__ import annotations

import pytest

from tests.factories import api_key, bearer, example, published


@pytest.fixture
async def erase_key(db_url: str) -> dict[str, str]:
    """itsailor's schema published, and a key that may erase."""
    await published(db_url, example("itsailor"))
    return bearer(await api_key(db_url, "dsr:erase"))

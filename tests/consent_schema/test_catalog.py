"""The per-process schema catalog: one query per lapse of the current pointer, however many
requests find it stale at once, and none per request for a property that does not exist."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from service.consent_schema import service as versions
from service.consent_schema.document import ConsentSchemaDocument
from service.consent_schema.service import SchemaCatalog
from service.core.db import create_engine
from service.core.errors import NotFound
from tests.factories import example, published


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url, pool_size=5)
    yield engine
    await engine.dispose()


def count_pointer_queries(engine: AsyncEngine) -> list[str]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM consent_properties" in statement:
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    return seen


async def test_a_stale_pointer_is_looked_up_once_for_all_waiting_requests(
    db_url: str, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await published(db_url, example("itsailor"))
    catalog = SchemaCatalog(engine)
    queries = count_pointer_queries(engine)

    states = await asyncio.gather(*(catalog.state("itsailor") for _ in range(64)))
    assert {s.current_version for s in states} == {1}
    assert len(queries) == 1

    # Lapsed: the next burst shares one new query, then the cache answers again.
    monkeypatch.setattr(versions, "CURRENT_POINTER_TTL_SECONDS", 0.0)
    await asyncio.gather(*(catalog.state("itsailor") for _ in range(64)))
    assert len(queries) == 2
    monkeypatch.setattr(versions, "CURRENT_POINTER_TTL_SECONDS", 60.0)
    await asyncio.gather(*(catalog.state("itsailor") for _ in range(64)))
    assert len(queries) == 2


async def test_a_fresh_look_up_sees_a_publish_made_elsewhere_after_a_cached_answer(
    db_url: str, engine: AsyncEngine
) -> None:
    await published(db_url, example("itsailor"))
    catalog = SchemaCatalog(engine)
    assert (await catalog.state("itsailor")).current_version == 1
    changed = example("itsailor").model_dump(mode="json")
    changed["policy_url"] = "https://itsailor.io/cookies-v2"
    await published(
        db_url, ConsentSchemaDocument.model_validate(changed)
    )  # another process: this catalog was not told
    assert (await catalog.state("itsailor")).current_version == 1  # cached, within the second
    fresh = await asyncio.gather(*(catalog.state("itsailor", fresh=True) for _ in range(8)))
    assert {s.current_version for s in fresh} == {2}
    assert (await catalog.state("itsailor")).current_version == 2


async def test_an_unknown_property_is_a_404_without_a_query_per_request(
    engine: AsyncEngine,
) -> None:
    catalog = SchemaCatalog(engine)
    queries = count_pointer_queries(engine)
    for _ in range(20):
        with pytest.raises(NotFound, match="no property named 'nosuch'"):
            await catalog.state("nosuch")
    assert len(queries) == 1


async def test_invented_property_names_cannot_grow_the_cache_without_bound(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(versions, "MAX_CACHED_POINTERS", 10)
    catalog = SchemaCatalog(engine)
    for n in range(25):
        with pytest.raises(NotFound):
            await catalog.state(f"invented-{n}")
    assert len(catalog._current) <= 10

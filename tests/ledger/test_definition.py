"""The consent event is defined once (`ledger/event.py`): the table, the writer's batch, the record,
the export and the database's erasure guard all follow it. Each test fails if one of them drifts."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import UTC, datetime

import asyncpg
import httpx
import orjson
import pytest

from service.dsr.export import CSV_COLUMNS, CSV_RECORD_COLUMNS
from service.ledger.bodies import ConsentRecord
from service.ledger.event import (
    DATABASE_COLUMNS,
    EXPORT_EVIDENCE_COLUMNS,
    IDENTIFYING_COLUMNS,
    RECORD_COLUMNS,
    WRITTEN_COLUMNS,
    NewEvent,
    record,
)
from service.ledger.leaf import attach_leaf
from service.ledger.tables import ConsentEventRow, input_type, stored_value
from service.ledger.writer import RECORD_SQL, batch_json
from tests.factories import api_key, bearer, event, example, published


def new_event(**changes: object) -> NewEvent:
    values: dict[str, object] = {
        "event_id": uuid.uuid4(), "property": "itsailor", "subject_id": uuid.uuid4(),
        "event_type": "save-selection", "schema_version": 1,
        "choices": {"analytics": True, "necessary": True}, "effective": {"analytics": False, "necessary": True},
        "gpc": True, "dnt": False, "signals_applied": ["gpc"], "source": "banner", "entered_by": None, "ip_hash": "a" * 64,
        "user_hash": "c" * 64, "hash_key_id": "k1", "user_agent": "ua",
        "page_url": "https://x.io/", "tcf_string": "CP1", "gpp_string": "DB1", "request_hash": "b" * 64,
        "recorded_at": datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC),
    }  # fmt: skip
    values.update(changes)
    return attach_leaf(NewEvent(**values), "e" * 64)  # type: ignore[arg-type]


def _positional(position: int, column_type: str) -> str:
    """How consent_record_events reads a value of a row (migration 0027): text as it is (a
    varchar's length is the insert's to check), a JSON null as NULL, other types cast."""
    if column_type == "JSONB":
        return f"nullif(e->{position}, 'null'::jsonb)"
    if column_type == "text" or column_type.startswith(("TEXT", "VARCHAR")):
        return f"e->>{position}"
    cast = {"TIMESTAMP WITH TIME ZONE": "timestamptz"}.get(column_type, column_type.lower())
    return f"(e->>{position})::{cast}"


def test_the_table_holds_exactly_the_written_columns_and_the_databases_own() -> None:
    table_columns = [column.name for column in ConsentEventRow.__table__.columns]
    assert sorted(table_columns) == sorted((*WRITTEN_COLUMNS, *DATABASE_COLUMNS))


async def test_the_database_stores_every_written_column_from_the_batch_document(
    db: asyncpg.Connection,
) -> None:
    """`consent_record_events` (frozen in its migration) reads each of the batch's rows with
    exactly NewEvent's fields and types and stores each column; a field added to NewEvent needs a
    migration that re-creates it."""
    stored_event = new_event()
    [row] = orjson.loads(batch_json([stored_event]))
    # Each row is the event's values in NewEvent's field order (migration 0027)...
    as_object = orjson.loads(orjson.dumps(stored_event, default=lambda b: "\\x" + b.hex()))
    assert list(as_object) == list(WRITTEN_COLUMNS)
    assert row == list(as_object.values())
    definition = " ".join(
        (
            await db.fetchval(
                "SELECT pg_get_functiondef('consent_record_events(jsonb, text, bytea)'::regprocedure)"
            )
        ).split()
    )
    # ...which the function reads by position, each as its column's type.
    read = ", ".join(
        f"{_positional(position, input_type(name))} AS {name}"
        for position, name in enumerate(WRITTEN_COLUMNS)
    )
    stored = ", ".join(stored_value(name) for name in WRITTEN_COLUMNS)
    assert f"SELECT {read} FROM jsonb_array_elements(batch) AS e)" in definition
    # ...and the batch's stored receipt, which the database numbers (migration 0012).
    assert f"INSERT INTO consent_events ({', '.join(WRITTEN_COLUMNS)}, receipt)" in definition
    assert f"SELECT {stored}, (SELECT id FROM receipt) FROM input" in definition


@pytest.mark.parametrize("event_type", ["accept-all", "save-selection", "withdraw", "re-prompt"])
def test_the_record_is_the_api_model_field_for_field(event_type: str) -> None:
    stored = new_event(event_type=event_type)
    plain = record(stored, optional=frozenset({"analytics"}), ttl_days=365)
    assert list(plain) == list(ConsentRecord.model_fields)
    hot_path = orjson.loads(orjson.dumps(plain, option=orjson.OPT_UTC_Z))
    model = ConsentRecord.model_validate(plain)
    assert hot_path == orjson.loads(model.model_dump_json())
    # Every RECORD column shows in the record (the signals as one object).
    shown = {*plain, "gpc", "dnt", "signals_applied"} - {"signals", "status", "expires_at"}
    assert shown == set(RECORD_COLUMNS)
    assert set(asdict(stored)) - set(RECORD_COLUMNS) == {
        "entered_by", "ip_hash", "user_hash", "hash_key_id", "user_agent", "page_url",
        "tcf_string", "gpp_string", "request_hash", "salt", "identity", "leaf",
    }  # fmt: skip


def test_the_csv_export_has_the_record_flattened_and_the_evidence() -> None:
    record_keys = set(ConsentRecord.model_fields) - {"signals"}
    assert set(CSV_RECORD_COLUMNS) == record_keys | {
        "gpc", "dnt", "signals_applied", "schema_content_hash",
    }  # fmt: skip
    assert CSV_COLUMNS[len(CSV_RECORD_COLUMNS) :] == EXPORT_EVIDENCE_COLUMNS
    assert set(EXPORT_EVIDENCE_COLUMNS) <= set(WRITTEN_COLUMNS) | set(DATABASE_COLUMNS)


async def test_the_json_export_item_is_the_record_plus_the_evidence(
    client: httpx.AsyncClient, db_url: str
) -> None:
    await published(db_url, example("itsailor"))
    key = await api_key(db_url, "dsr:read")
    subject = uuid.uuid4()
    stored = await client.post(
        "/v1/properties/itsailor/consent-events", json=event("accept-all", subject_id=subject)
    )
    exported = await client.post(
        "/v1/dsr/exports", json={"subject_id": str(subject)}, headers=bearer(key)
    )
    [item] = exported.json()["events"]
    assert list(item) == [
        *ConsentRecord.model_fields,
        "schema_content_hash",
        *EXPORT_EVIDENCE_COLUMNS,
        "ledger",  # its inclusion proof (docs/evidence.md), null until sealed
        "receipt",  # the receipt its 201 carried, and its path in it
    ]
    assert {k: item[k] for k in ConsentRecord.model_fields} == {
        k: v for k, v in stored.json().items() if not k.startswith("receipt")
    }


@pytest.mark.usefixtures("client")
async def test_the_erasure_guard_lets_anonymisation_clear_exactly_the_identifying_columns(
    db: asyncpg.Connection, db_url: str
) -> None:
    """The migration's trigger names the columns itself; it must agree with the definition:
    anonymisation clears every identifying column and changes nothing else."""
    await published(db_url, example("itsailor"))
    columns = {
        row["column_name"]: row["data_type"]
        for row in await db.fetch(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'consent_events'"
        )
    }
    await db.fetch(RECORD_SQL, batch_json([new_event(property="itsailor")]), None, None)
    cleared = [f"{name} = NULL" for name in IDENTIFYING_COLUMNS] + ["anonymised_at = now()"]
    changed = {
        "uuid": "gen_random_uuid()", "text": "'changed'", "character varying": "'changed'",
        "integer": "{c} + 1", "jsonb": "'{{\"changed\": true}}'::jsonb", "boolean": "NOT {c}",
        "timestamp with time zone": "{c} + interval '1 second'", "bytea": "sha256({c})",
    }  # fmt: skip

    async def refused(assignments: list[str]) -> bool:
        try:
            async with db.transaction():
                await db.execute("SET LOCAL consent.erasure = 'on'")
                await db.execute(f"SET LOCAL consent.erasure_id = '{uuid.uuid4()}'")
                await db.execute("UPDATE consent_events SET " + ", ".join(assignments))
                raise _RolledBack
        except asyncpg.exceptions.InsufficientPrivilegeError:
            return True
        except _RolledBack:
            return False

    assert not await refused(cleared)
    for name in WRITTEN_COLUMNS:
        if name in IDENTIFYING_COLUMNS:
            others = [item for item in cleared if not item.startswith(f"{name} =")]
            assert await refused(others), f"anonymisation may leave {name} in place"
        else:
            change = changed[columns[name]].format(c=name)
            assert await refused([*cleared, f"{name} = {change}"]), (
                f"anonymisation may change {name}"
            )


class _RolledBack(Exception):
    pass

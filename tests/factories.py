"""Plain typed helpers that put real rows in a test's database."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from service.auth.service import CreatedKey, create_key, revoke_key
from service.consent_schema.document import ConsentSchemaDocument, load_document_file
from service.consent_schema.publishing import publish
from service.consent_schema.service import PublishedVersion
from service.core.db import create_engine, create_sessionmaker

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "schemas"


async def api_key(db_url: str, *scopes: str, revoked: bool = False) -> CreatedKey:
    engine = create_engine(db_url, pool_size=1)
    try:
        async with create_sessionmaker(engine).begin() as session:
            key = await create_key(session, name="test", scopes=list(scopes))
            if revoked:
                await revoke_key(session, key.id)
            return key
    finally:
        await engine.dispose()


def example(name: str) -> ConsentSchemaDocument:
    return load_document_file(EXAMPLES / f"{name}.yaml")


APPLYING = "applying"  # a property that applies both signals while present


def applying_example() -> ConsentSchemaDocument:
    """itsailor's categories under a policy that *applies* GPC and DNT while present (ailabrix's
    way, for both signals) instead of recording them as a decision: property `applying`."""
    document = example("itsailor")
    signals = document.signals.model_copy(update={"gpc": "apply", "dnt": "apply"})
    return document.model_copy(update={"property": APPLYING, "signals": signals})


async def published(
    db_url: str, document: ConsentSchemaDocument, *, material: bool = True
) -> PublishedVersion:
    engine = create_engine(db_url, pool_size=1)
    try:
        async with create_sessionmaker(engine).begin() as session:
            version, _ = await publish(session, document, material=material, published_by="test")
            return version
    finally:
        await engine.dispose()


def bearer(key: CreatedKey) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.secret}"}


def event(
    event_type: str = "accept-all",
    *,
    subject_id: uuid.UUID | None = None,
    schema_version: int = 1,
    **fields: Any,
) -> dict[str, Any]:
    """A consent event body as a banner would send it."""
    return {
        "subject_id": str(subject_id or uuid.uuid4()),
        "event_type": event_type,
        "schema_version": schema_version,
        **fields,
    }


class Clock:
    """A clock the tests move by hand (install with `services(app).clock = clock`)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 15, 9, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


async def bulk_events(
    owner_url: str,
    *,
    count: int,
    property_name: str,
    schema_version: int = 1,
    subject_id: uuid.UUID | None = None,
    ip_hash: bytes | None = None,
    hash_key_id: str | None = None,
) -> None:
    """Real rows, fast: COPY straight into consent_events as its owner (for volume tests; the
    service's role stores events only through consent_record_events)."""
    import asyncpg

    recorded = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        (
            uuid.uuid4(), property_name, subject_id or uuid.uuid4(), "accept-all", schema_version,
            '{"necessary": true}', '{"necessary": true}', False, False, "[]", ip_hash, None,
            hash_key_id, "bulk", None, None, None, bytes(32), recorded + timedelta(seconds=i),
            # Stand-ins of the ledger's columns, which the database requires (not the record's
            # hashes: `ledger verify` would name these rows).
            os.urandom(32), os.urandom(32),
        )
        for i in range(count)
    ]  # fmt: skip
    connection = await asyncpg.connect(owner_url)
    try:
        await connection.copy_records_to_table(
            "consent_events",
            records=rows,
            columns=[
                "event_id", "property", "subject_id", "event_type", "schema_version", "choices",
                "effective", "gpc", "dnt", "signals_applied", "ip_hash", "user_hash",
                "hash_key_id", "user_agent", "page_url", "tcf_string", "gpp_string",
                "request_hash", "recorded_at", "identity", "leaf",
            ],
        )  # fmt: skip
    finally:
        await connection.close()


async def accepted_by_the_owner(db_url: str, owner_url: str) -> uuid.UUID:
    """itsailor published and one subject's accept-all inserted by the tables' owner (the
    service's role inserts no row by hand), for the CLI's tests: the subject."""
    await published(db_url, example("itsailor"))
    subject = uuid.uuid4()
    connection = await asyncpg.connect(owner_url)
    try:
        await connection.execute(
            "INSERT INTO consent_events (event_id, property, subject_id, event_type,"
            " schema_version, choices, effective, gpc, dnt, signals_applied, request_hash,"
            " recorded_at, identity, leaf) VALUES ($1, 'itsailor', $2, 'accept-all', 1, '{}',"
            " '{}', false, false, '[]', sha256('x'), now(), sha256('i'::bytea),"
            " sha256($1::uuid::text::bytea))",
            uuid.uuid4(), subject,
        )  # fmt: skip
    finally:
        await connection.close()
    return subject

"""Streaming exports: JSON (portable, self-contained evidence) and CSV (one row per event).

Events are read in chunks and written as they come, so a history of any length never sits whole in
memory. The JSON closes with every schema version the events refer to, content and hash included,
so it proves on its own what the person was shown (EDPB 05/2020 ¶108): anyone can recompute each
`content_hash` as the SHA-256 of the canonical JSON of `content`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import IO, Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service import __version__
from service.consent_schema.service import SchemaCatalog
from service.core.errors import ServiceUnavailable
from service.core.hashing import Hasher
from service.core.logging import get_logger
from service.core.times import iso
from service.dsr import dpv
from service.dsr.bodies import DsrQuery, ExportFormat, identifier_of
from service.dsr.service import ExportPlan, count_export, export_chunks, searched_hashes
from service.ledger.bodies import ConsentRecord
from service.ledger.event import EXPORT_EVIDENCE_COLUMNS, record
from service.ledger.proofs import SealProofs, seal_body
from service.ledger.receipts import ReceiptSigner
from service.ledger.sealer import Seal
from service.ledger.stored_receipts import StoredReceipts

CHUNK = 1000

# A CSV row is the record, flattened, in an order for people (what and when first), then the
# evidence columns of the ledger's definition; a test checks it covers exactly the record.
CSV_RECORD_COLUMNS = (
    "event_id", "recorded_at", "property", "subject_id", "event_type", "schema_version",
    "schema_content_hash", "status", "expires_at", "choices", "effective", "gpc", "dnt",
    "signals_applied", "source",
)  # fmt: skip
CSV_COLUMNS = (*CSV_RECORD_COLUMNS, *EXPORT_EVIDENCE_COLUMNS)
# What a spreadsheet would run as a formula: text starting so gets a leading `'` in the CSV export
# (docs/evidence.md, "Exports"); the JSON export keeps the exact value.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _iso(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with `Z`, like every other time the service shows."""
    return iso(value) if value is not None else None


async def open_export(
    engine: AsyncEngine,
    catalog: SchemaCatalog,
    hasher: Hasher,
    query: DsrQuery,
    *,
    audit_id: uuid.UUID,
    export_format: ExportFormat,
    exported_at: datetime,
    request_id: str | None,
    progress: Callable[[int], None] | None = None,
    receipts: ReceiptSigner | None = None,
) -> tuple[ExportPlan, AsyncIterator[bytes]]:
    """An export counted and read in one snapshot (a transaction at REPEATABLE READ), so its
    `event_count` (and `X-Event-Count`) is the number of events in it even when an erasure
    commits while it is read. The caller audits the look-up (`audit_id`) and commits that first,
    with the connection given back: an export holds one connection at a time, or concurrent
    exports could each hold one and wait for another. Counted before this returns, with the
    file's first bytes ready."""
    planned: list[ExportPlan] = []
    chunks = _in_one_snapshot(
        engine, catalog, hasher, query, planned, audit_id, export_format, exported_at,
        request_id, progress, receipts,
    )  # fmt: skip
    first = await anext(chunks)
    return planned[0], _after(first, chunks)


log = get_logger("service.dsr.export")

# What an export keeps in memory while it is read from the database; the rest goes to a temporary
# file, unlinked as it is made (`tempfile.SpooledTemporaryFile`).
SPOOL_IN_MEMORY = 8 * 1024 * 1024
SPOOL_READ = 256 * 1024


async def spooled(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`stream` read to its end, and its snapshot's connection given back, before a byte is
    sent; then sent from the spool. Sent as it was read, a client reading slowly (or not at
    all) held a pooled connection and a REPEATABLE READ transaction for as long as it liked:
    two dozen such clients left the banner's state look-ups waiting for a connection
    (docs/evidence.md, "Exports")."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 (closed below)
    try:
        async for data in stream:
            try:
                spool.write(data)
            except OSError as exc:  # the temporary folder full or not writable: not the database
                log.error("export_spool_failed", error=exc.strerror or type(exc).__name__)
                raise ServiceUnavailable(
                    "the export could not be held in a temporary file; retry later"
                ) from None
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return _read_back(spool)


async def _read_back(spool: IO[bytes]) -> AsyncIterator[bytes]:
    with spool:
        while data := spool.read(SPOOL_READ):
            yield data


async def _after(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for data in rest:
        yield data


async def _in_one_snapshot(
    engine: AsyncEngine,
    catalog: SchemaCatalog,
    hasher: Hasher,
    query: DsrQuery,
    planned: list[ExportPlan],
    audit_id: uuid.UUID,
    export_format: ExportFormat,
    exported_at: datetime,
    request_id: str | None,
    progress: Callable[[int], None] | None,
    receipts: ReceiptSigner | None,
) -> AsyncIterator[bytes]:
    async with engine.connect() as connection:
        snapshot = await connection.execution_options(isolation_level="REPEATABLE READ")
        async with snapshot.begin():
            count, last_seq = await count_export(snapshot, hasher, query)
            plan = ExportPlan(query, count, last_seq, audit_id)
            planned.append(plan)
            async for data in stream_export(
                snapshot, catalog, hasher, plan, export_format=export_format,
                exported_at=exported_at, request_id=request_id, progress=progress,
                receipts=receipts,
            ):  # fmt: skip
                yield data


async def _event_dicts(
    connection: AsyncConnection,
    catalog: SchemaCatalog,
    hasher: Hasher,
    plan: ExportPlan,
    versions: dict[tuple[str, int], str],
    seals: dict[int, Seal],
) -> AsyncIterator[list[dict[str, Any]]]:
    after = 0
    proofs = SealProofs(connection)
    receipts = StoredReceipts(connection)
    while True:
        rows = (await connection.execute(*export_chunks(plan, hasher, after, CHUNK))).all()
        if not rows:
            return
        chunk = []
        for row in rows:
            version = await catalog.version(row.property, row.schema_version)
            versions[(row.property, row.schema_version)] = version.content_hash
            stored = record(row, optional=version.optional, ttl_days=version.ttl_days)
            item = ConsentRecord.model_validate(stored).model_dump(mode="json")
            item["schema_content_hash"] = version.content_hash
            for name in EXPORT_EVIDENCE_COLUMNS:
                value = getattr(row, name)
                item[name] = _iso(value) if isinstance(value, datetime) else value
            leaf = bytes(row.leaf) if row.leaf is not None else None
            item["ledger"] = await proofs.proof(
                row.seq,
                leaf,
                bytes(row.salt) if row.salt is not None else None,
                bytes(row.identity) if row.identity is not None else None,
            )
            # The receipt its batch was given, and its path in it (docs/evidence.md).
            item["receipt"] = await receipts.body(row.receipt, leaf)
            chunk.append(item)
        seals.update(proofs.seals)
        yield chunk
        after = rows[-1].seq


async def stream_export(
    connection: AsyncConnection,
    catalog: SchemaCatalog,
    hasher: Hasher,
    plan: ExportPlan,
    *,
    export_format: ExportFormat,
    exported_at: datetime,
    request_id: str | None,
    progress: Callable[[int], None] | None = None,
    receipts: ReceiptSigner | None = None,
) -> AsyncIterator[bytes]:
    versions: dict[tuple[str, int], str] = {}
    seals: dict[int, Seal] = {}
    events = _event_dicts(connection, catalog, hasher, plan, versions, seals)
    if export_format is ExportFormat.CSV:
        async for data in _csv(events, progress):
            yield data
        return
    signed = hashlib.sha256()
    length = 0
    body = (
        dpv.document(events, catalog, versions, progress)
        if export_format is ExportFormat.DPV
        else _json(
            events, catalog, plan, hasher, versions, seals, exported_at, request_id, progress
        )
    )
    async for data in body:
        signed.update(data)
        length += len(data)
        yield data
    # The signature closes the document; it covers every byte before it (docs/evidence.md).
    signature = None
    if receipts is not None:
        signature = receipts.sign(
            {"export_id": str(plan.audit_id), "bytes": length, "sha256": signed.hexdigest()},
            typ="consent-export+jws",
        )
    yield (f',\n"signature": {json.dumps(signature)}}}\n').encode()


async def _json(
    events: AsyncIterator[list[dict[str, Any]]],
    catalog: SchemaCatalog,
    plan: ExportPlan,
    hasher: Hasher,
    versions: dict[tuple[str, int], str],
    seals: dict[int, Seal],
    exported_at: datetime,
    request_id: str | None,
    progress: Callable[[int], None] | None,
) -> AsyncIterator[bytes]:
    kind, value = identifier_of(plan.query)
    header = {
        "format": "consent-service/dsr-export",
        "format_version": 1,
        "service_version": __version__,
        "export_id": str(plan.audit_id),
        "exported_at": _iso(exported_at),
        "request_id": request_id,
        "query": {
            "identifier_type": kind.value,
            # A subject id is the person's own pseudonym, shown as is; an IP or account id only as
            # the keyed hashes it was searched by (one per configured key).
            "subject_id": value if kind.value == "subject_id" else None,
            "searched_hashes": [
                {"key_id": key_id, "hash": digest}
                for key_id, digest in searched_hashes(plan.query, hasher)
            ],
            "property": plan.query.property,
            "since": _iso(plan.query.since),
            "until": _iso(plan.query.until),
        },
        "event_count": plan.count,
    }
    opening = json.dumps(header)[:-1]
    yield (opening + ', "events": [').encode()
    first = True
    async for batch in events:
        parts = []
        for item in batch:
            parts.append(("\n" if first else ",\n") + json.dumps(item))
            first = False
        yield "".join(parts).encode()
        if progress is not None:
            progress(len(batch))
    yield b'\n], "schema_versions": ['
    for index, (property_name, number) in enumerate(sorted(versions)):
        version = await catalog.version(property_name, number)
        entry = {**version.summary(), "content": version.content}
        yield (("\n" if index == 0 else ",\n") + json.dumps(entry)).encode()
    # The seals the events' `ledger` proofs lead to: check each `seal_hash`, and that the ledger
    # still holds them (`consent-service ledger verify`).
    yield b'\n], "ledger_seals": ['
    for index, seal_id in enumerate(sorted(seals)):
        yield (("\n" if index == 0 else ",\n") + json.dumps(seal_body(seals[seal_id]))).encode()
    yield b"\n]"


async def _csv(
    events: AsyncIterator[list[dict[str, Any]]], progress: Callable[[int], None] | None
) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    yield buffer.getvalue().encode()
    async for chunk in events:
        buffer.seek(0)
        buffer.truncate()
        for item in chunk:
            row = {
                **item,
                "choices": json.dumps(item["choices"], sort_keys=True),
                "effective": json.dumps(item["effective"], sort_keys=True),
                "signals_applied": " ".join(item["signals"]["applied"]),
                "gpc": _csv_bool(item["signals"]["gpc"]),
                "dnt": _csv_bool(item["signals"]["dnt"]),
            }
            writer.writerow({name: _csv_cell(row[name]) for name in CSV_COLUMNS})
        yield buffer.getvalue().encode()
        if progress is not None:
            progress(len(chunk))


def _csv_bool(value: bool) -> str:
    return "true" if value else "false"  # as in the JSON export, not Python's True/False


def _csv_cell(value: Any) -> Any:
    """A cell as written: text a spreadsheet would run as a formula gets a leading `'`; other
    values (the schema version, an int; None, an empty cell) stay as they are."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value

"""The DSR API: look up, export and erase a person's consent history; read the audit trail."""

from __future__ import annotations

from typing import Annotated

import structlog
from annotated_types import Interval
from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BeforeValidator

from service.auth.dependencies import (
    Auditor,
    DsrEraseCounter,
    DsrEraser,
    DsrReader,
    DsrWithdrawer,
    private,
)
from service.core.errors import problem_responses
from service.core.json_input import StrictJSONRoute, decimal_text, read_json
from service.core.pipeline import body_read_by_hand
from service.dsr.bodies import (
    AuditEntry,
    AuditPage,
    DsrAction,
    DsrQuery,
    ErasurePreview,
    ErasureRequest,
    ErasureResult,
    ExportFormat,
    ExportRequest,
    HistoryPage,
    HistoryRequest,
    WithdrawalRequest,
    WithdrawalResult,
)
from service.dsr.erasure import decisions_left_behind, erase_in_one_transaction
from service.dsr.export import open_export, spooled
from service.dsr.service import (
    audit_page,
    count_export,
    count_matching,
    history_page,
    known_property,
    record_audit,
)
from service.dsr.withdrawal import Recorded, record_withdrawal
from service.state import Catalog, Clock, Engine, Hashing, Session, Writer

router = APIRouter(
    prefix="/v1/dsr",
    tags=["data-subject requests"],
    route_class=StrictJSONRoute,
    dependencies=[Depends(private)],
)

AUTH_ERRORS = (401, 403, 422, 429)
BODY_ERRORS = (*AUTH_ERRORS, 404, 413, 415)
# Identifiers and a time range: a few hundred bytes. Read only after the key was checked.
MAX_BODY_BYTES = 16 * 1024
# An audit page's size in the query: decimal digits only, like every number in a URL
# (core/json_input.py `UrlInt`; its own alias, for its narrower bound).
AuditPageSize = Annotated[int, Interval(ge=1, le=1000), BeforeValidator(decimal_text)]


@router.post(
    "/history",
    summary="Look up a person's consent events",
    response_model=HistoryPage,
    responses=problem_responses(*BODY_ERRORS, 503),
)
@body_read_by_hand(HistoryRequest)
async def dsr_history(
    request: Request,
    session: Session,
    catalog: Catalog,
    hasher: Hashing,
    principal: DsrReader,
) -> HistoryPage:
    body = await read_json(request, HistoryRequest, limit=MAX_BODY_BYTES)
    await known_property(session, body.property)
    items, next_cursor = await history_page(
        session, catalog, hasher, body, limit=body.limit, cursor=body.cursor
    )
    await record_audit(
        session,
        action=DsrAction.HISTORY,
        actor=principal.key_id,
        query=body,
        hasher=hasher,
        matched=len(items),
    )
    await session.commit()
    return HistoryPage(items=items, next_cursor=next_cursor)


EXPORT_FILES = {
    ExportFormat.JSON: ("json", "application/json"),
    ExportFormat.CSV: ("csv", "text/csv; charset=utf-8"),
    ExportFormat.DPV: ("jsonld", "application/ld+json"),
}


@router.post(
    "/exports",
    summary="Export a person's complete history (JSON evidence, CSV or DPV JSON-LD), streamed",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The export",
            "content": {"application/json": {}, "text/csv": {}, "application/ld+json": {}},
        },
        **problem_responses(*BODY_ERRORS, 503),
    },
)
@body_read_by_hand(ExportRequest)
async def dsr_export(
    request: Request,
    session: Session,
    engine: Engine,
    catalog: Catalog,
    hasher: Hashing,
    clock: Clock,
    writer: Writer,
    principal: DsrReader,
) -> StreamingResponse:
    body = await read_json(request, ExportRequest, limit=MAX_BODY_BYTES)
    await known_property(session, body.property)
    # The look-up is audited, and committed with its connection given back, before the export
    # is read (on a connection of its own) and before a byte is sent. The audit's count is what
    # matched then; the file counts what it holds (an erasure may commit in between).
    count, _ = await count_export(session, hasher, body)
    audit_id = await record_audit(
        session, action=DsrAction.EXPORT, actor=principal.key_id, query=body, hasher=hasher,
        matched=count,
    )  # fmt: skip
    await session.commit()
    plan, stream = await open_export(
        engine, catalog, hasher, body, audit_id=audit_id, export_format=body.format,
        exported_at=clock(), request_id=structlog.contextvars.get_contextvars().get("request_id"),
        receipts=writer.receipts,
    )  # fmt: skip
    extension, media_type = EXPORT_FILES[body.format]
    return StreamingResponse(
        await spooled(stream),
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="dsr-export-{plan.audit_id}.{extension}"',
            "Cache-Control": "no-store",
            "X-Event-Count": str(plan.count),
        },
    )


@router.post(
    "/erasures",
    summary="Erase (delete or anonymise) everything matching one identifier",
    response_model=ErasureResult,
    responses=problem_responses(*BODY_ERRORS, 503),
)
@body_read_by_hand(ErasureRequest)
async def dsr_erase(
    request: Request, engine: Engine, hasher: Hashing, principal: DsrEraser
) -> ErasureResult:
    body = await read_json(request, ErasureRequest, limit=MAX_BODY_BYTES)
    # The erasure and its audit row are one call of `consent_erase`, atomic alone; with the
    # erasures of the earlier decisions it leaves behind, several: one transaction holds them.
    return await erase_in_one_transaction(
        engine, hasher, body, mode=body.mode, actor=principal.key_id, reference=body.reference
    )


@router.post(
    "/erasures/preview",
    summary="Count what an erasure of the same request would erase, erasing nothing",
    response_model=ErasurePreview,
    responses=problem_responses(*BODY_ERRORS, 503),
)
@body_read_by_hand(DsrQuery)
async def dsr_erase_preview(
    request: Request, session: Session, hasher: Hashing, principal: DsrEraseCounter
) -> ErasurePreview:
    """`consent-service dsr erase --dry-run` for the API: the console shows it before it asks
    (an IP or account id can take other events of the consent ids it matches). Counting is a
    look-up of a person's records: it needs `dsr:read` besides `dsr:erase`, and is audited as
    one."""
    body = await read_json(request, DsrQuery, limit=MAX_BODY_BYTES)
    await known_property(session, body.property)
    matched = await count_matching(session, hasher, body)
    left_behind = await decisions_left_behind(session, hasher, body)
    await record_audit(
        session, action=DsrAction.HISTORY, actor=principal.key_id, query=body, hasher=hasher,
        matched=matched,
    )  # fmt: skip
    await session.commit()
    earlier = sum(left_behind.values())
    return ErasurePreview(
        matched=matched,
        earlier_decisions=earlier,
        consent_ids_with_earlier_decisions=len(left_behind),
        total=matched + earlier,
    )


@router.post(
    "/withdrawals",
    summary="Record a withdrawal a person sent in writing",
    status_code=status.HTTP_201_CREATED,
    response_model=WithdrawalResult,
    responses={
        200: {
            "model": WithdrawalResult,
            "description": "A retry (the same reference, identifier and property): the "
            "withdrawal recorded first, read back; nothing recorded again",
        },
        **problem_responses(*BODY_ERRORS, 409, 503),
    },
)
@body_read_by_hand(WithdrawalRequest)
async def dsr_withdraw(
    request: Request,
    response: Response,
    session: Session,
    catalog: Catalog,
    hasher: Hashing,
    clock: Clock,
    writer: Writer,
    principal: DsrWithdrawer,
) -> WithdrawalResult:
    body = await read_json(request, WithdrawalRequest, limit=MAX_BODY_BYTES)
    await known_property(session, body.property)
    result, recorded = await record_withdrawal(
        session, catalog, hasher, body, actor=principal.key_id, now=clock(),
        receipts=writer.receipts,
    )  # fmt: skip
    await session.commit()
    if recorded is Recorded.RETRY:  # a re-entry records again: 201, as a new one
        response.status_code = status.HTTP_200_OK
    return result


@router.get(
    "/audit",
    summary="The audit trail of DSR actions, newest first",
    response_model=AuditPage,
    responses=problem_responses(*AUTH_ERRORS, 503),
)
async def dsr_audit(
    session: Session,
    hasher: Hashing,
    principal: Auditor,
    limit: Annotated[AuditPageSize, Query(description="Entries per page, 1 to 1000.")] = 100,
    cursor: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> AuditPage:
    rows, next_cursor = await audit_page(session, hasher, limit=limit, cursor=cursor)
    return AuditPage(
        items=[AuditEntry.model_validate(row, from_attributes=True) for row in rows],
        next_cursor=next_cursor,
    )

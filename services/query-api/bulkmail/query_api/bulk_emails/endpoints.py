"""``/api/v1/bulk_action/email/``: Close's bulk email actions, plus the audit, recipients and retry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from bulkmail.query_api.bulk_emails import service
from bulkmail.query_api.bulk_emails.schemas import (
    BulkEmailIn,
    BulkEmailList,
    BulkEmailOut,
    BulkEmailStatusIn,
    PreviewIn,
    PreviewOut,
    RecipientList,
    RetryIn,
    recipient_out,
)
from bulkmail.query_api.deps import AuthDep, DatabaseDep, OutboxDep, SessionDep, SettingsDep
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.pagination import PageDep
from bulkmail.shared.models import BulkEmail, RecipientState

router = APIRouter(prefix="/bulk_action/email", tags=["bulk_email"])

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]


@router.post("/preview", response_model=PreviewOut)
async def preview_bulk_email(
    payload: PreviewIn, session: SessionDep, principal: AuthDep, settings: SettingsDep
) -> PreviewOut:
    """The pre-send audit: who would get it, who is excluded and why, warnings, rendered samples."""
    return await service.preview(session, settings, principal, payload)


@router.post("/", response_model=BulkEmailOut, status_code=status.HTTP_201_CREATED)
async def create_bulk_email(
    payload: BulkEmailIn,
    response: Response,
    session: SessionDep,
    principal: AuthDep,
    settings: SettingsDep,
    outbox: OutboxDep,
    idempotency_key: IdempotencyKey = None,
) -> BulkEmailOut:
    bulk, created = await service.create_and_queue(session, settings, principal, payload, idempotency_key, outbox)
    if not created:
        response.status_code = status.HTTP_200_OK
    return await service.to_out(session, bulk)


@router.get("/", response_model=BulkEmailList)
async def list_bulk_emails(
    session: SessionDep, principal: AuthDep, page: PageDep, template_id: Annotated[int | None, Query()] = None
) -> BulkEmailList:
    rows, has_more = await service.list_page(session, principal.organization_id, template_id, page)
    return BulkEmailList(data=[await service.to_out(session, b) for b in rows], has_more=has_more)


@router.get("/{bulk_email_id}/", response_model=BulkEmailOut)
async def get_bulk_email(
    bulk_email_id: int, session: SessionDep, principal: AuthDep, database: DatabaseDep
) -> BulkEmailOut:
    """Progress, counts by recipient state, and an ETA that honours the account's limits."""
    bulk = await get_owned(session, BulkEmail, bulk_email_id, principal.organization_id, what="bulk email")
    return await service.to_out(session, bulk, database.sessionmaker, principal.timezone)


@router.put("/{bulk_email_id}/", response_model=BulkEmailOut)
async def change_bulk_email_status(
    bulk_email_id: int, payload: BulkEmailStatusIn, session: SessionDep, principal: AuthDep, outbox: OutboxDep
) -> BulkEmailOut:
    """Pause, resume or cancel."""
    bulk = await get_owned(session, BulkEmail, bulk_email_id, principal.organization_id, what="bulk email")
    await service.control(session, bulk, payload.status, principal.user_id, outbox)
    return await service.to_out(session, bulk)


@router.post("/{bulk_email_id}/retry_failed/", response_model=BulkEmailOut)
async def retry_failed_recipients(
    bulk_email_id: int, session: SessionDep, principal: AuthDep, outbox: OutboxDep, payload: RetryIn | None = None
) -> BulkEmailOut:
    """Send again to the recipients that failed (never to hard bounces; to unknown ones only if asked)."""
    bulk = await get_owned(session, BulkEmail, bulk_email_id, principal.organization_id, what="bulk email")
    await service.retry_and_queue(session, bulk, (payload or RetryIn()).include_unknown, outbox)
    return await service.to_out(session, bulk)


@router.get("/{bulk_email_id}/recipients/", response_model=RecipientList)
async def list_recipients(
    bulk_email_id: int,
    session: SessionDep,
    principal: AuthDep,
    page: PageDep,
    state: Annotated[RecipientState | None, Query()] = None,
) -> RecipientList:
    """The per-recipient delivery report."""
    bulk = await get_owned(session, BulkEmail, bulk_email_id, principal.organization_id, what="bulk email")
    rows, has_more = await service.recipients_page(session, bulk.id, state, page)
    return RecipientList(data=[recipient_out(r) for r in rows], has_more=has_more)

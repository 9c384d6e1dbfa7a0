"""Sending services' webhooks: ``/api/v1/email_account/{id}/webhooks/`` to set one up, and the
public ``POST /webhooks/{token}`` they call (no API key: the token and the provider's signature
say who it is)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select

from bulkmail.query_api.deps import AuthDep, OutboxDep, SessionDep, SettingsDep
from bulkmail.query_api.errors import BadRequest, NotFound
from bulkmail.query_api.feedback_webhooks import service
from bulkmail.query_api.feedback_webhooks.schemas import FeedbackWebhookIn, FeedbackWebhookOut, WebhookAccepted
from bulkmail.query_api.feedback_webhooks.signatures import CertFetcher, SignatureError, load_sendgrid_key
from bulkmail.query_api.ownership import get_owned
from bulkmail.shared.logging import get_logger
from bulkmail.shared.models import EmailAccount, FeedbackWebhook
from bulkmail.shared.secrets import SecretBox

log = get_logger(__name__)

router = APIRouter(prefix="/email_account/{account_id}/webhooks", tags=["email_account"])
public_router = APIRouter(prefix="/webhooks", tags=["webhooks"])


def _out(w: FeedbackWebhook, url: str | None = None) -> FeedbackWebhookOut:
    return FeedbackWebhookOut(
        id=w.id, email_account_id=w.email_account_id, provider=w.provider, date_created=w.created_at, url=url
    )


async def get_cert_fetcher(request: Request) -> CertFetcher:
    # Tests put their own on app.state; production fetches from the (checked) SNS URL.
    return getattr(request.app.state, "sns_cert_fetcher", service.fetch_sns_cert)


@router.post("/", status_code=status.HTTP_201_CREATED, response_model=FeedbackWebhookOut)
async def create_webhook(
    account_id: int,
    payload: FeedbackWebhookIn,
    request: Request,
    session: SessionDep,
    principal: AuthDep,
    settings: SettingsDep,
) -> FeedbackWebhookOut:
    account = await get_owned(session, EmailAccount, account_id, principal.organization_id, what="email account")
    box: SecretBox = request.app.state.secret_box
    if payload.provider == "sendgrid" and payload.signing_key is not None:
        try:  # a key that cannot verify anything is refused now, not at the first event
            load_sendgrid_key(payload.signing_key.get_secret_value())
        except SignatureError as exc:
            raise BadRequest(f"signing_key: {exc}") from None
    token, digest = service.new_token()
    webhook = FeedbackWebhook(
        organization_id=account.organization_id,
        email_account_id=account.id,
        provider=payload.provider,
        token_hash=digest,
        signing_key_encrypted=box.encrypt(payload.signing_key.get_secret_value().strip())
        if payload.signing_key is not None
        else "",
        created_at=service.now(),
    )
    session.add(webhook)
    await session.flush()
    return _out(webhook, service.webhook_url(settings, token))


@router.get("/", response_model=list[FeedbackWebhookOut])
async def list_webhooks(account_id: int, session: SessionDep, principal: AuthDep) -> list[FeedbackWebhookOut]:
    await get_owned(session, EmailAccount, account_id, principal.organization_id, what="email account")
    rows = await session.scalars(
        select(FeedbackWebhook)
        .where(
            FeedbackWebhook.email_account_id == account_id,
            FeedbackWebhook.organization_id == principal.organization_id,
        )
        .order_by(FeedbackWebhook.id)
    )
    return [_out(w) for w in rows]


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook(account_id: int, webhook_id: int, session: SessionDep, principal: AuthDep) -> None:
    result = await session.execute(
        delete(FeedbackWebhook).where(
            FeedbackWebhook.id == webhook_id,
            FeedbackWebhook.email_account_id == account_id,
            FeedbackWebhook.organization_id == principal.organization_id,
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotFound(f"No webhook with id {webhook_id} on email account {account_id}.")


def _refused(status_code: int, detail: str) -> JSONResponse:
    return JSONResponse({"error": "Forbidden" if status_code == 403 else "Conflict", "detail": detail}, status_code)


@public_router.post("/{token}", response_model=WebhookAccepted, include_in_schema=True)
async def receive(
    token: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    outbox: OutboxDep,
    fetch_cert: Annotated[CertFetcher, Depends(get_cert_fetcher)],
) -> WebhookAccepted | JSONResponse:
    webhook = await session.scalar(
        select(FeedbackWebhook).where(FeedbackWebhook.token_hash == service.token_hash(token))
    )
    if webhook is None:
        raise NotFound("No webhook at this address.")
    body = await request.body()
    if len(body) > 5_000_000:
        return _refused(403, "the body is larger than any provider's batch")
    now = service.now()
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        # In a thread: checking SNS fetches its certificate (once per URL) over the network.
        delivery, reports, sns = await asyncio.to_thread(
            service.read_delivery, webhook, request.app.state.secret_box, settings, body, headers, fetch_cert, now
        )
        await service.remember_delivery(session, webhook.id, delivery, now, settings.webhook_max_age_s)
        if sns is not None and sns.get("Type") == "SubscriptionConfirmation":
            await asyncio.to_thread(service.confirm_subscription, sns, settings, fetch_cert)
    except SignatureError as exc:
        log.warning("webhook refused", webhook_id=webhook.id, provider=webhook.provider, reason=str(exc))
        return _refused(403, str(exc))
    except service.Replayed:
        log.warning("webhook replay refused", webhook_id=webhook.id, provider=webhook.provider)
        return _refused(409, "this signed delivery was already accepted")
    accepted, ignored, emitted = await service.apply_all(session, settings, webhook, reports)
    for event in emitted:
        outbox.add_event(event)
    return WebhookAccepted(accepted=accepted, ignored=ignored)

"""Sending services' webhooks: ``/api/v1/email_account/{id}/webhooks/`` to set one up, and the
public ``POST /webhooks/{token}`` they call (no API key: the token and the provider's signature
say who it is)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import JSONResponse

from bulkmail.query_api.deps import AuthDep, OutboxDep, SessionDep, SettingsDep
from bulkmail.query_api.feedback_webhooks import service
from bulkmail.query_api.feedback_webhooks.schemas import FeedbackWebhookIn, FeedbackWebhookOut, WebhookAccepted, to_out
from bulkmail.query_api.feedback_webhooks.signatures import CertFetcher, SignatureError
from bulkmail.query_api.ownership import get_owned
from bulkmail.shared.logging import get_logger
from bulkmail.shared.models import EmailAccount

log = get_logger(__name__)

router = APIRouter(prefix="/email_account/{account_id}/webhooks", tags=["email_account"])
public_router = APIRouter(prefix="/webhooks", tags=["webhooks"])


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
    webhook, token = await service.create(session, account, payload, request.app.state.secret_box)
    return to_out(webhook, service.webhook_url(settings, token))


@router.get("/", response_model=list[FeedbackWebhookOut])
async def list_webhooks(account_id: int, session: SessionDep, principal: AuthDep) -> list[FeedbackWebhookOut]:
    await get_owned(session, EmailAccount, account_id, principal.organization_id, what="email account")
    return [to_out(w) for w in await service.list_for_account(session, principal.organization_id, account_id)]


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook(account_id: int, webhook_id: int, session: SessionDep, principal: AuthDep) -> None:
    await service.delete_webhook(session, principal.organization_id, account_id, webhook_id)


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
    webhook = await service.by_token(session, token)
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

"""Webhook endpoints: created per email account with an unguessable token; a delivery verified,
checked against replays and applied through the same path as the inbox sync."""

from __future__ import annotations

import fnmatch
import hashlib
import secrets
import ssl
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography import x509
from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.errors import BadRequest, NotFound
from bulkmail.query_api.feedback_webhooks import events, repository, signatures
from bulkmail.query_api.feedback_webhooks.schemas import FeedbackWebhookIn
from bulkmail.query_api.feedback_webhooks.signatures import CertFetcher, SignatureError, load_sendgrid_key
from bulkmail.shared import feedback
from bulkmail.shared.contracts import EmailFeedbackEvent
from bulkmail.shared.feedback import Feedback
from bulkmail.shared.models import EmailAccount, FeedbackWebhook, WebhookDelivery
from bulkmail.shared.secrets import SecretBox
from bulkmail.shared.settings import Settings

SYSTEM_CA_FILE = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"


class Replayed(Exception):
    """A signature (delivery) this endpoint has already accepted."""


def new_token() -> tuple[str, str]:
    """(token for the URL, its SHA-256 to store)."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def webhook_url(settings: Settings, token: str) -> str:
    return f"{settings.base_url}/webhooks/{token}"


@lru_cache(maxsize=8)
def _trust(path: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(Path(path).read_bytes())


def sns_trust(settings: Settings) -> list[x509.Certificate]:
    return _trust(settings.sns_ca_file or SYSTEM_CA_FILE)


_cert_cache: dict[str, bytes] = {}


def fetch_sns_cert(url: str) -> bytes:
    """The signing certificate, fetched once per URL (SNS rotates it rarely; its URL changes then)."""
    if url not in _cert_cache:
        with urllib.request.urlopen(url, timeout=5) as response:
            _cert_cache[url] = response.read(100_000)
    return _cert_cache[url]


def read_delivery(
    webhook: FeedbackWebhook,
    box: SecretBox,
    settings: Settings,
    body: bytes,
    headers: dict[str, str],
    fetch_cert: CertFetcher,
    now: datetime,
) -> tuple[str, list[Feedback], dict[str, Any] | None]:
    """Verify the delivery; (its replay key, its events, an SNS message to act on or None)."""
    max_age = settings.webhook_max_age_s
    payload = signatures.parse_json(body)
    if webhook.provider == "mailgun":
        if not isinstance(payload, dict):
            raise SignatureError("a Mailgun webhook body is a JSON object")
        key = box.decrypt(webhook.signing_key_encrypted)
        delivery = signatures.verify_mailgun(key, payload.get("signature") or {}, now, max_age)
        return delivery, events.mailgun_events(payload.get("event-data") or {}), None
    if webhook.provider == "sendgrid":
        key = box.decrypt(webhook.signing_key_encrypted)
        delivery = signatures.verify_sendgrid(
            key,
            headers.get("x-twilio-email-event-webhook-signature", ""),
            headers.get("x-twilio-email-event-webhook-timestamp", ""),
            body,
            now,
            max_age,
        )
        return delivery, events.sendgrid_events(payload if isinstance(payload, list) else []), None
    if not isinstance(payload, dict):
        raise SignatureError("an SNS message is a JSON object")
    delivery = signatures.verify_sns(payload, fetch_cert, sns_trust(settings), settings.sns_cert_hosts, now, max_age)
    if payload.get("Type") == "Notification":
        return delivery, events.ses_events(payload), None
    return delivery, [], payload


async def remember_delivery(session: AsyncSession, webhook_id: int, delivery: str, now: datetime, keep: float) -> None:
    """Refuse a delivery seen before; forget the ones old enough that their timestamps are refused anyway."""
    await session.execute(
        delete(WebhookDelivery).where(
            WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.received_at < now - timedelta(seconds=2 * keep)
        )
    )
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    result = await session.execute(
        insert(WebhookDelivery)
        .values(webhook_id=webhook_id, delivery_key=delivery[:200], received_at=now)
        .on_conflict_do_nothing(index_elements=["webhook_id", "delivery_key"])
        .returning(WebhookDelivery.webhook_id)
    )
    if result.first() is None:
        raise Replayed(delivery)


async def apply_all(
    session: AsyncSession, settings: Settings, webhook: FeedbackWebhook, reports: list[Feedback]
) -> tuple[int, int, list[EmailFeedbackEvent]]:
    accepted, ignored, out = 0, 0, []
    for fb in reports:
        applied = await feedback.apply(
            session,
            webhook.organization_id,
            webhook.email_account_id,
            fb,
            soft_bounce_limit=settings.soft_bounce_limit,
            match_days=settings.bounce_match_days,
        )
        if applied.status == "applied":
            accepted += 1
            out += applied.events
        else:
            ignored += 1
    return accepted, ignored, out


def confirm_subscription(message: dict[str, Any], settings: Settings, fetch: CertFetcher) -> None:
    """SNS asks to confirm a new subscription by visiting SubscribeURL (on an SNS host, checked)."""
    url = str(message.get("SubscribeURL", ""))
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or not any(fnmatch.fnmatch(host, p) for p in settings.sns_cert_hosts):
        raise SignatureError(f"SubscribeURL must be an https URL on an SNS host, not {url!r}")
    fetch(url)


def now() -> datetime:
    return datetime.now(UTC)


async def create(
    session: AsyncSession, account: EmailAccount, payload: FeedbackWebhookIn, box: SecretBox
) -> tuple[FeedbackWebhook, str]:
    """A webhook for the account, and its token (shown once: only its hash is stored)."""
    if payload.provider == "sendgrid" and payload.signing_key is not None:
        try:  # a key that cannot verify anything is refused now, not at the first event
            load_sendgrid_key(payload.signing_key.get_secret_value())
        except SignatureError as exc:
            raise BadRequest(f"signing_key: {exc}") from None
    token, digest = new_token()
    webhook = FeedbackWebhook(
        organization_id=account.organization_id,
        email_account_id=account.id,
        provider=payload.provider,
        token_hash=digest,
        signing_key_encrypted=box.encrypt(payload.signing_key.get_secret_value().strip())
        if payload.signing_key is not None
        else "",
        created_at=now(),
    )
    session.add(webhook)
    await session.flush()
    return webhook, token


async def delete_webhook(session: AsyncSession, organization_id: int, account_id: int, webhook_id: int) -> None:
    result = await session.execute(
        delete(FeedbackWebhook).where(
            FeedbackWebhook.id == webhook_id,
            FeedbackWebhook.email_account_id == account_id,
            FeedbackWebhook.organization_id == organization_id,
        )
    )
    if not getattr(result, "rowcount", 0):  # a DELETE's result always has one
        raise NotFound(f"No webhook with id {webhook_id} on email account {account_id}.")


async def list_for_account(session: AsyncSession, organization_id: int, account_id: int) -> Sequence[FeedbackWebhook]:
    return await repository.webhooks_of(session, organization_id, account_id)


async def by_token(session: AsyncSession, token: str) -> FeedbackWebhook:
    """The webhook a provider calls, by the token in its URL (404 for any other)."""
    webhook = await repository.by_token_hash(session, token_hash(token))
    if webhook is None:
        raise NotFound("No webhook at this address.")
    return webhook

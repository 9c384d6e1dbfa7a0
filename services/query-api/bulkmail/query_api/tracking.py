"""``/t/o/{token}`` (the open pixel) and ``/t/c/{token}`` (a tracked link) for bulk emails that
opted in to tracking. A token we did not sign, or one altered in any byte, is a 404; a click
redirects only to the URL its signed token names, which was in that recipient's message.
The rules are in docs/feedback.md."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.deps import OutboxDep, SessionDep, SettingsDep
from bulkmail.query_api.errors import NotFound
from bulkmail.shared import tracking
from bulkmail.shared.feedback import Match, record_engagement
from bulkmail.shared.models import BulkEmail, FeedbackKind, Recipient, RecipientState
from bulkmail.shared.settings import Settings

router = APIRouter(prefix="/t", tags=["tracking"], include_in_schema=False)

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, max-age=0", "Pragma": "no-cache"}
# States in which a message was delivered (or may have been): an open or click is believable.
_OPENABLE = (RecipientState.sent, RecipientState.replied, RecipientState.complained, RecipientState.unknown)


async def _find(
    session: AsyncSession, settings: Settings, token_text: str, kind: str
) -> tuple[tracking.Token, Match, datetime | None]:
    token = tracking.read_token(tracking.key_for(settings), token_text)
    if token is None or token.kind != kind:
        raise NotFound("No such link.")
    enabled = BulkEmail.track_opens if kind == "o" else BulkEmail.track_clicks
    row = (
        await session.execute(
            select(
                Recipient.id,
                Recipient.bulk_email_id,
                Recipient.lead_id,
                Recipient.contact_id,
                Recipient.email_normalized,
                Recipient.message_id,
                Recipient.sent_at,
            )
            .join(BulkEmail, BulkEmail.id == Recipient.bulk_email_id)
            .where(
                Recipient.bulk_email_id == token.bulk_email_id,
                Recipient.email_normalized == token.email_normalized,
                Recipient.organization_id == token.organization_id,
                Recipient.state.in_(_OPENABLE),
                enabled.is_(True),
            )
        )
    ).first()
    if row is None:
        raise NotFound("No such link.")
    return token, Match(*row[:6]), row[6]


def _machine(request: Request, settings: Settings, sent_at: datetime | None, now: datetime) -> bool:
    since = (now - sent_at).total_seconds() if sent_at is not None else None
    return tracking.looks_like_a_machine(request.headers.get("user-agent", ""), since, settings.machine_open_window_s)


@router.get("/o/{token}")
async def opened(
    token: str, request: Request, session: SessionDep, settings: SettingsDep, outbox: OutboxDep
) -> Response:
    parsed, match, sent_at = await _find(session, settings, token, "o")
    now = datetime.now(UTC)
    event = await record_engagement(
        session,
        match,
        parsed.organization_id,
        FeedbackKind.open,
        machine=_machine(request, settings, sent_at, now),
        detail=request.headers.get("user-agent", "")[:300],
        now=now,
    )
    if event is not None:
        outbox.add_event(event)
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


@router.get("/c/{token}")
async def clicked(
    token: str, request: Request, session: SessionDep, settings: SettingsDep, outbox: OutboxDep
) -> RedirectResponse:
    parsed, match, sent_at = await _find(session, settings, token, "c")
    if not tracking.trackable(parsed.url):
        raise NotFound("No such link.")
    now = datetime.now(UTC)
    event = await record_engagement(
        session,
        match,
        parsed.organization_id,
        FeedbackKind.click,
        machine=_machine(request, settings, sent_at, now),
        detail=parsed.url[:1000],
        now=now,
    )
    if event is not None:
        outbox.add_event(event)
    return RedirectResponse(parsed.url, status_code=302, headers=NO_STORE)

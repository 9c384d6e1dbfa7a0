"""Every query of the feedback webhook domain."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.models import FeedbackWebhook


async def webhooks_of(session: AsyncSession, organization_id: int, account_id: int) -> Sequence[FeedbackWebhook]:
    rows = await session.scalars(
        select(FeedbackWebhook)
        .where(FeedbackWebhook.email_account_id == account_id, FeedbackWebhook.organization_id == organization_id)
        .order_by(FeedbackWebhook.id)
    )
    return rows.all()


async def by_token_hash(session: AsyncSession, token_hash: str) -> FeedbackWebhook | None:
    return await session.scalar(select(FeedbackWebhook).where(FeedbackWebhook.token_hash == token_hash))

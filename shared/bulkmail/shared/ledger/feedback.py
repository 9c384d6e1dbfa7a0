"""What comes back after ``sent``: the ledger's transitions for bounces, complaints and replies.

Each function is one conditional UPDATE naming the states it may move from, so a late, repeated
or out-of-order report can never move a recipient backwards (a reply after a hard bounce stays
a bounce; a second bounce changes nothing). They return whether the row moved. The states are
described in docs/feedback.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.models import Recipient, RecipientState

R = RecipientState

# A recipient whose outcome was lost in a crash (`unknown`) was evidently sent once a bounce,
# complaint or reply names its Message-ID.
BOUNCED_FROM = (R.sent, R.unknown)
COMPLAINED_FROM = (R.sent, R.unknown, R.replied)
REPLIED_FROM = (R.sent, R.unknown)


async def _move(
    session: AsyncSession, recipient_id: int, allowed_from: Iterable[RecipientState], to: RecipientState, now: datetime
) -> bool:
    result = await session.execute(
        update(Recipient)
        .where(Recipient.id == recipient_id, Recipient.state.in_(list(allowed_from)))
        .values(state=to, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def mark_bounced(session: AsyncSession, recipient_id: int, now: datetime) -> bool:
    """A hard bounce: ``sent``/``unknown`` → ``bounced``."""
    return await _move(session, recipient_id, BOUNCED_FROM, R.bounced, now)


async def mark_complained(session: AsyncSession, recipient_id: int, now: datetime) -> bool:
    """A spam complaint: ``sent``/``unknown``/``replied`` → ``complained``."""
    return await _move(session, recipient_id, COMPLAINED_FROM, R.complained, now)


async def mark_replied(session: AsyncSession, recipient_id: int, now: datetime) -> bool:
    """A reply naming our Message-ID: ``sent``/``unknown`` → ``replied``."""
    return await _move(session, recipient_id, REPLIED_FROM, R.replied, now)

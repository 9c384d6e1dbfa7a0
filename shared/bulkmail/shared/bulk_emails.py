"""A bulk email's lifecycle: status changes, recipient counts and the events that tell the world.

Every service moves a bulk email through here, so a status only changes along the allowed
edges, with one conditional UPDATE (two workers racing to finish a send cannot both win).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared import metrics
from bulkmail.shared.contracts import BulkEmailCounts, BulkEmailEvent, BulkEmailEventType
from bulkmail.shared.models import BulkEmail, BulkEmailStatus, Recipient, RecipientState

S = BulkEmailStatus

# Statuses in which mailers may send: the first chunks go out while the ledger is still being
# written (loading).
SENDING_STATUSES = (S.loading, S.processing, S.resuming)
# Not yet finished and not paused: the dispatcher advances these, the user may pause them, and
# they have an ETA.
UNFINISHED_STATUSES = (S.created, *SENDING_STATUSES)
FINAL_STATUSES = (S.done, S.error, S.cancelled)
ACTIVE_STATUSES = (*UNFINISHED_STATUSES, S.paused)
# A bulk email whose failed recipients the user may queue again.
RETRYABLE_STATUSES = (S.done, S.processing, S.paused)

# Which status each event announces.
EVENT_FOR_STATUS: dict[BulkEmailStatus, BulkEmailEventType] = {
    S.created: "bulk_email.created",
    S.processing: "bulk_email.processing",
    S.paused: "bulk_email.paused",
    S.resuming: "bulk_email.resumed",
    S.cancelled: "bulk_email.cancelled",
    S.done: "bulk_email.done",
    S.error: "bulk_email.error",
}


async def transition(
    session: AsyncSession,
    bulk_email_id: int,
    allowed_from: Iterable[BulkEmailStatus],
    to: BulkEmailStatus,
    **values: object,
) -> bool:
    """Move to ``to`` if the current status is one of ``allowed_from``; False if another got there first."""
    now = datetime.now(UTC)
    result = await session.execute(
        update(BulkEmail)
        .where(BulkEmail.id == bulk_email_id, BulkEmail.status.in_(list(allowed_from)))
        .values(status=to, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    moved = bool(result.rowcount)  # type: ignore[attr-defined]
    if moved:
        metrics.record_bulk_email_status(to.value)
    return moved


async def recipient_counts(session: AsyncSession, bulk_email_id: int) -> BulkEmailCounts:
    rows = await session.execute(
        select(Recipient.state, func.count()).where(Recipient.bulk_email_id == bulk_email_id).group_by(Recipient.state)
    )
    return BulkEmailCounts(**{RecipientState(state).value: n for state, n in rows})


async def skip_reasons(session: AsyncSession, bulk_email_id: int) -> dict[str, int]:
    rows = await session.execute(
        select(Recipient.skip_reason, func.count())
        .where(Recipient.bulk_email_id == bulk_email_id, Recipient.state == RecipientState.skipped)
        .group_by(Recipient.skip_reason)
    )
    return {str(reason): n for reason, n in rows}


async def event_for(
    session: AsyncSession, bulk: BulkEmail, status: BulkEmailStatus, detail: str = ""
) -> BulkEmailEvent:
    return BulkEmailEvent(
        type=EVENT_FOR_STATUS[status],
        organization_id=bulk.organization_id,
        bulk_email_id=bulk.id,
        status=status.value,
        n_leads=bulk.n_leads,
        counts=await recipient_counts(session, bulk.id),
        detail=detail,
        occurred_at=datetime.now(UTC),
    )

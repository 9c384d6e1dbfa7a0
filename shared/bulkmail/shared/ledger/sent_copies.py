"""The Sent-copy sub-state of a sent recipient.

``pending`` (or ``skipped``) is set with the ``sent`` outcome. A copy is claimed ``copying``
(committed before the APPEND, so two deliveries never copy the same message), then ends
``appended`` | ``skipped`` | ``failed`` (nothing stored) | ``unknown`` (may be stored). The
dispatcher's sweep publishes ``pending``, ``failed`` and ``unknown`` ones again
(``copies_published`` notes when).

The claim is a lease: ``updated_at`` is when the worker last said it is alive. It renews its
claimed copies every ``COPY_LEASE_RENEW``, and starts an APPEND only while its last renewal is
younger than ``COPY_LEASE_START``; an APPEND takes at most the IMAP ``total_timeout`` (60 s). A copy
whose lease is older than ``COPY_LEASE`` therefore belongs to a worker that stopped (killed, or
cut off from the database): the sweep makes it ``unknown``, and its retry searches the Sent folder
for the Message-ID before appending, so a copy the dead worker did store is not stored twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.ledger.rows import changed
from bulkmail.shared.models import ACCEPTED_STATES, Recipient, SentCopyState

C = SentCopyState

# Copies a worker may take: never tried, or tried without a stored result.
CLAIMABLE_COPIES = (C.pending, C.failed, C.unknown)
# Where a claimed copy may end.
_ENDS = (C.appended, C.skipped, C.failed, C.unknown)

# The claim's lease (see above): renewed every 10 s; no APPEND starts on a renewal older than
# 20 s; 20 s + an APPEND's 60 s budget stays inside the 90 s after which the sweep takes it back.
COPY_LEASE = timedelta(seconds=90)
COPY_LEASE_RENEW = timedelta(seconds=10)
COPY_LEASE_START = timedelta(seconds=20)


async def claim_copies(
    session: AsyncSession, organization_id: int, bulk_email_id: int, recipient_ids: Iterable[int], now: datetime
) -> dict[int, SentCopyState]:
    """pending | failed | unknown → copying, for accepted recipients (sent, or what came back since)
    of this bulk email and organisation. Returns the state each claimed copy came from (``unknown``
    needs the Message-ID search)."""
    ids = list(recipient_ids)
    was: dict[int, SentCopyState] = {}
    for state in CLAIMABLE_COPIES:  # one UPDATE per state, so each claim knows what it came from
        rows = await session.execute(
            update(Recipient)
            .where(
                Recipient.id.in_(ids),
                Recipient.bulk_email_id == bulk_email_id,
                Recipient.organization_id == organization_id,
                Recipient.state.in_(ACCEPTED_STATES),
                Recipient.sent_copy_state == state,
            )
            .values(sent_copy_state=C.copying, updated_at=now)
            .returning(Recipient.id)
            .execution_options(synchronize_session=False)
        )
        was.update((rid, state) for rid in rows.scalars())
    return was


async def renew_copies(session: AsyncSession, recipient_ids: list[int], now: datetime) -> int:
    """The worker copying these is alive: their lease starts again now (copies still ``copying`` only)."""
    if not recipient_ids:
        return 0
    result = await session.execute(
        update(Recipient)
        .where(Recipient.id.in_(recipient_ids), Recipient.sent_copy_state == C.copying)
        .values(updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return changed(result)


async def record_copy(session: AsyncSession, recipient_id: int, state: SentCopyState, uid: str = "") -> bool:
    """copying → appended | skipped | failed | unknown, with the stored message's UID if known."""
    _check_end(state)
    result = await session.execute(
        update(Recipient)
        .where(Recipient.id == recipient_id, Recipient.sent_copy_state == C.copying)
        .values(sent_copy_state=state, sent_copy_uid=uid, updated_at=_now())
        .execution_options(synchronize_session=False)
    )
    return bool(changed(result))


async def finish_copies(session: AsyncSession, recipient_ids: list[int], state: SentCopyState, now: datetime) -> int:
    """copying → ``state`` for several copies at once (the account decided, or the server is out)."""
    _check_end(state)
    if not recipient_ids:
        return 0
    result = await session.execute(
        update(Recipient)
        .where(Recipient.id.in_(recipient_ids), Recipient.sent_copy_state == C.copying)
        .values(sent_copy_state=state, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return changed(result)


async def copies_lost(session: AsyncSession, recipient_ids: list[int], now: datetime) -> int:
    """copying → unknown: their lease ran out, the worker copying them stopped; the copy may or
    may not be stored."""
    return await finish_copies(session, recipient_ids, C.unknown, now)


async def copies_published(session: AsyncSession, recipient_ids: list[int], now: datetime) -> int:
    """pending | failed | unknown, touched: published again now, so the next sweep waits for the
    backoff instead of publishing them again. The state does not change."""
    if not recipient_ids:
        return 0
    result = await session.execute(
        update(Recipient)
        .where(Recipient.id.in_(recipient_ids), Recipient.sent_copy_state.in_(CLAIMABLE_COPIES))
        .values(updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return changed(result)


def _check_end(state: SentCopyState) -> None:
    if state not in _ENDS:
        raise ValueError(f"a claimed Sent copy cannot end {state.value!r}")


def _now() -> datetime:
    return datetime.now(UTC)

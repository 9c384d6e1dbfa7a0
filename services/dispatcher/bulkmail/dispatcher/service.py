"""The dispatcher's work for one bulk email: load its ledger once, then keep its chunks flowing."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.dispatcher.pump import PumpResult, pump
from bulkmail.dispatcher.recipients import build_recipients
from bulkmail.shared import bulk_emails, ledger
from bulkmail.shared.broker import Broker
from bulkmail.shared.contracts import NOTIFY_QUEUE, SEND_QUEUE, SENT_COPY_QUEUE, SentCopy
from bulkmail.shared.db import Database
from bulkmail.shared.logging import correlation_id, get_logger
from bulkmail.shared.models import (
    ACCEPTED_STATES,
    BulkEmail,
    BulkEmailLead,
    BulkEmailStatus,
    Recipient,
    RecipientState,
    SentCopyState,
)
from bulkmail.shared.settings import Settings

log = get_logger(__name__)
S = BulkEmailStatus


@dataclass(frozen=True)
class SentCopyRetry:
    """When the sweep publishes Sent copies again (the mailer's ``sent_copies`` does the copying).

    A copy waits at least as long as it had already waited when last tried (and at least
    ``first``), so attempts double in spacing: about 11 in ``give_up``, after which it stays failed.
    """

    every: float = 30.0  # seconds between looks: the query is not free on a big ledger
    first: timedelta = timedelta(minutes=1)  # failed / unknown
    lost: timedelta = timedelta(minutes=10)  # still pending: its message was lost (or queued behind many)
    stuck: timedelta = ledger.COPY_LEASE  # "copying" whose lease ran out (its worker stopped): becomes unknown
    give_up: timedelta = timedelta(hours=24)
    batch: int = 50  # recipients per SentCopy message
    limit: int = 2000  # rows looked at per sweep


class Dispatcher:
    def __init__(self, settings: Settings, database: Database, broker: Broker) -> None:
        self.settings = settings
        self.database = database
        self.broker = broker
        self._running: set[int] = set()
        self._again: set[int] = set()
        self.sent_copy_retry = SentCopyRetry()
        self._sent_copies_swept = 0.0

    async def handle(self, bulk_email_id: int) -> None:
        """Advance one bulk email as far as it can go now. Safe to call any number of times.

        Signals for a bulk email already being advanced in this process are folded into one
        more round once the current one ends, so none is lost and none runs concurrently.
        """
        if bulk_email_id in self._running:
            self._again.add(bulk_email_id)
            return
        self._running.add(bulk_email_id)
        # _advance tags what it does with the bulk email's correlation id; undone afterwards, so
        # the sweep's next bulk email (one without an id of its own) does not carry this one's.
        token = correlation_id.set(correlation_id.get())
        try:
            while True:
                self._again.discard(bulk_email_id)
                await self._advance(bulk_email_id)
                if bulk_email_id not in self._again:
                    break
        finally:
            correlation_id.reset(token)
            self._running.discard(bulk_email_id)

    async def _advance(self, bulk_email_id: int) -> None:
        async with self.database.session() as session:
            bulk = await session.get(BulkEmail, bulk_email_id)
            if bulk is None:
                log.warning("bulk email not found", bulk_email_id=bulk_email_id)
                return
            # Everything done for this bulk email carries the id of the request that created it,
            # in logs and in the headers of the messages published below.
            correlation_id.set(bulk.correlation_id or correlation_id.get())
            status = bulk.status
            if status == S.created:
                await bulk_emails.transition(session, bulk.id, [S.created], S.loading)
                status = S.loading
            # Paused while loading, a build cut short (the dispatcher stopped) waits for the
            # resume, as paused bulk emails are not swept: finish it then.
            unfinished = status == S.resuming and bulk.n_leads_processed < await _snapshot_size(session, bulk.id)
        if status == S.loading or unfinished:
            await self._load(bulk)
        await self.pump(bulk_email_id)

    async def _load(self, bulk: BulkEmail) -> None:
        # Sending starts with the first batch of the ledger: 100,000 recipients take seconds to
        # write, and the mailers would otherwise wait for the last of them.
        report = await build_recipients(self.database, bulk, after_batch=lambda: self.pump(bulk.id))
        async with self.database.session() as session:
            n_objects = await session.scalar(
                select(func.count())
                .select_from(Recipient)
                .where(Recipient.bulk_email_id == bulk.id, Recipient.state != RecipientState.skipped)
            )
            # The total is kept whatever the status: a bulk email paused while loading still has
            # its whole ledger written, and resumes with its progress out of the right total.
            await session.execute(update(BulkEmail).where(BulkEmail.id == bulk.id).values(n_objects=n_objects or 0))
            moved = await bulk_emails.transition(session, bulk.id, [S.loading], S.processing)
            event = await bulk_emails.event_for(session, bulk, S.processing) if moved else None
        log.info("recipients loaded", bulk_email_id=bulk.id, leads=report.leads, recipients=report.recipients)
        if event is not None:
            await self.broker.emit(event.type, event)

    async def pump(self, bulk_email_id: int) -> None:
        async with self.database.session() as session:
            result = await pump(session, self.settings, bulk_email_id)
        await self._publish(result)

    async def _publish(self, result: PumpResult) -> None:
        # Only after the commit above: every message points at committed rows.
        for chunk in result.chunks:
            await self.broker.send(SEND_QUEUE, chunk)
        for event in result.events:
            await self.broker.emit(event.type, event)
        if result.notify is not None:
            await self.broker.send(NOTIFY_QUEUE, result.notify)

    async def sweep(self) -> None:
        """Advance every unfinished bulk email: lost messages, due retries, stale chunks."""
        async with self.database.session() as session:
            ids = list(
                await session.scalars(
                    select(BulkEmail.id)
                    .where(BulkEmail.status.in_(bulk_emails.UNFINISHED_STATUSES))
                    .order_by(BulkEmail.id)
                )
            )
        for bulk_email_id in ids:
            await self.handle(bulk_email_id)
        if time.monotonic() - self._sent_copies_swept >= self.sent_copy_retry.every:
            self._sent_copies_swept = time.monotonic()
            await self.retry_sent_copies()

    # -- Sent copies: failed, unknown and lost ones are published again, with backoff -------------

    async def retry_sent_copies(self) -> int:
        """Publish SentCopy again for copies due a retry; returns how many recipients."""
        policy, now = self.sent_copy_retry, datetime.now(UTC)
        retryable = ledger.CLAIMABLE_COPIES
        async with self.database.session() as session:
            # Recent bulk emails only, so the (bulk_email_id, state) index bounds the scan.
            recent = select(BulkEmail.id).where(BulkEmail.updated_at >= now - policy.give_up)
            rows = (
                await session.execute(
                    select(
                        Recipient.id,
                        Recipient.organization_id,
                        Recipient.bulk_email_id,
                        Recipient.sent_copy_state,
                        Recipient.sent_at,
                        Recipient.updated_at,
                    )
                    .where(
                        Recipient.bulk_email_id.in_(recent.scalar_subquery()),
                        Recipient.state.in_(ACCEPTED_STATES),
                        Recipient.sent_copy_state.in_([*retryable, SentCopyState.copying]),
                        Recipient.sent_at >= now - policy.give_up,
                        Recipient.updated_at < now - min(policy.first, policy.lost, policy.stuck),
                    )
                    .order_by(Recipient.updated_at)
                    .limit(policy.limit)
                )
            ).all()
            stuck = [
                r.id for r in rows if r.sent_copy_state == SentCopyState.copying and now - r.updated_at >= policy.stuck
            ]
            due = [r for r in rows if r.sent_copy_state in retryable and _copy_due(r, now, policy)]
            # The worker copying these stopped: the copy may or may not be stored. They are
            # published at once (no attempt of theirs failed; only a worker died), as unknown,
            # so their retry searches for the Message-ID before appending.
            await ledger.copies_lost(session, stuck, now)
            # Touched, so the next sweep waits for the backoff instead of publishing again.
            await ledger.copies_published(session, [r.id for r in due], now)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for r in due:
            groups[(r.organization_id, r.bulk_email_id)].append(r.id)
        stuck_ids = set(stuck)
        for r in rows:
            if r.id in stuck_ids:
                groups[(r.organization_id, r.bulk_email_id)].append(r.id)
        for (org_id, bulk_id), ids in groups.items():
            for i in range(0, len(ids), policy.batch):
                message = SentCopy(
                    organization_id=org_id, bulk_email_id=bulk_id, recipient_ids=ids[i : i + policy.batch]
                )
                await self.broker.send(SENT_COPY_QUEUE, message)
        if due or stuck:
            log.info("Sent copies published again", recipients=len(due), stuck=len(stuck))
        return len(due)


async def _snapshot_size(session: AsyncSession, bulk_email_id: int) -> int:
    return int(await session.scalar(select(func.count()).where(BulkEmailLead.bulk_email_id == bulk_email_id)) or 0)


def _copy_due(row: Any, now: datetime, policy: SentCopyRetry) -> bool:
    floor = policy.lost if row.sent_copy_state == SentCopyState.pending else policy.first
    waited_before = row.updated_at - (row.sent_at or row.updated_at)
    return bool(now - row.updated_at >= max(floor, waited_before))

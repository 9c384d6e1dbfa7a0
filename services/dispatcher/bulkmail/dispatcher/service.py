"""The dispatcher's work for one bulk email: load its ledger once, then keep its chunks flowing."""

from __future__ import annotations

from sqlalchemy import func, select

from bulkmail.dispatcher.pump import PumpResult, pump
from bulkmail.dispatcher.recipients import build_recipients
from bulkmail.shared import bulk_emails
from bulkmail.shared.broker import Broker
from bulkmail.shared.contracts import NOTIFY_QUEUE, SEND_QUEUE
from bulkmail.shared.db import Database
from bulkmail.shared.logging import correlation_id, get_logger
from bulkmail.shared.models import BulkEmail, BulkEmailStatus, Recipient, RecipientState
from bulkmail.shared.settings import Settings

log = get_logger(__name__)
S = BulkEmailStatus


class Dispatcher:
    def __init__(self, settings: Settings, database: Database, broker: Broker) -> None:
        self.settings = settings
        self.database = database
        self.broker = broker
        self._running: set[int] = set()
        self._again: set[int] = set()

    async def handle(self, bulk_email_id: int) -> None:
        """Advance one bulk email as far as it can go now. Safe to call any number of times.

        Signals for a bulk email already being advanced in this process are folded into one
        more round once the current one ends, so none is lost and none runs concurrently.
        """
        if bulk_email_id in self._running:
            self._again.add(bulk_email_id)
            return
        self._running.add(bulk_email_id)
        try:
            while True:
                self._again.discard(bulk_email_id)
                await self._advance(bulk_email_id)
                if bulk_email_id not in self._again:
                    break
        finally:
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
        if status == S.loading:
            await self._load(bulk)
        await self.pump(bulk_email_id)

    async def _load(self, bulk: BulkEmail) -> None:
        report = await build_recipients(self.database, bulk)
        async with self.database.session() as session:
            n_objects = await session.scalar(
                select(func.count())
                .select_from(Recipient)
                .where(Recipient.bulk_email_id == bulk.id, Recipient.state != RecipientState.skipped)
            )
            moved = await bulk_emails.transition(session, bulk.id, [S.loading], S.processing, n_objects=n_objects or 0)
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
                    .where(BulkEmail.status.in_([S.created, S.loading, S.processing, S.resuming]))
                    .order_by(BulkEmail.id)
                )
            )
        for bulk_email_id in ids:
            await self.handle(bulk_email_id)

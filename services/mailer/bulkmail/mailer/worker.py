"""The mailer process: sends chunks and the done emails."""

from __future__ import annotations

import asyncio

from bulkmail.mailer.done_email import send_done_email
from bulkmail.mailer.sender import ChunkSender
from bulkmail.shared.broker import Broker, Delivery
from bulkmail.shared.contracts import NOTIFY_QUEUE, SEND_QUEUE, NotifyBulkEmailDone, SendChunk
from bulkmail.shared.db import Database
from bulkmail.shared.logging import get_logger
from bulkmail.shared.settings import Settings
from bulkmail.shared.worker import Worker

log = get_logger(__name__)

DONE_EMAIL_ATTEMPTS = 3


class MailerWorker(Worker):
    service = "mailer"
    backlog_queues = (SEND_QUEUE, NOTIFY_QUEUE)

    def __init__(
        self, settings: Settings, database: Database | None = None, broker: Broker | None = None, prefetch: int = 4
    ) -> None:
        super().__init__(settings, database, broker)
        self.sender = ChunkSender(settings, self.database, self.broker)
        self.prefetch = prefetch

    async def start(self) -> None:
        await self.broker.consume(SEND_QUEUE, self._on_chunk, prefetch=self.prefetch)
        await self.broker.consume(NOTIFY_QUEUE, self._on_notify, prefetch=2)

    async def on_stop(self) -> None:
        await self.sender.close()

    async def _on_chunk(self, delivery: Delivery) -> None:
        await self.sender.handle(SendChunk.model_validate_json(delivery.body))

    async def _on_notify(self, delivery: Delivery) -> None:
        message = NotifyBulkEmailDone.model_validate_json(delivery.body)
        for attempt in range(1, DONE_EMAIL_ATTEMPTS + 1):
            try:
                await send_done_email(self.settings, self.database, message.bulk_email_id)
                return
            except Exception as exc:
                log.warning("done email not sent", bulk_email_id=message.bulk_email_id, attempt=attempt, error=str(exc))
                await asyncio.sleep(2**attempt)
        log.error("giving up on the done email", bulk_email_id=message.bulk_email_id)

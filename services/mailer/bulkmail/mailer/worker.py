"""The mailer process: sends chunks and the done emails."""

from __future__ import annotations

import asyncio

from bulkmail.mailer.account_checks import run_check
from bulkmail.mailer.done_email import send_done_email
from bulkmail.mailer.inbox_sync import InboxSyncRunner
from bulkmail.mailer.notices import send_account_paused_email
from bulkmail.mailer.sender import ChunkSender
from bulkmail.mailer.sent_copies import copy_to_sent
from bulkmail.shared.broker import Broker, Delivery
from bulkmail.shared.contracts import (
    ACCOUNT_CHECK_QUEUE,
    ACCOUNT_NOTICE_QUEUE,
    NOTIFY_QUEUE,
    SEND_QUEUE,
    SENT_COPY_QUEUE,
    AccountPausedNotice,
    CheckEmailAccount,
    EmailFeedbackEvent,
    NotifyBulkEmailDone,
    SendChunk,
    SentCopy,
)
from bulkmail.shared.db import Database
from bulkmail.shared.logging import get_logger
from bulkmail.shared.settings import Settings
from bulkmail.shared.worker import Worker

log = get_logger(__name__)

DONE_EMAIL_ATTEMPTS = 3


class MailerWorker(Worker):
    service = "mailer"
    backlog_queues = (SEND_QUEUE, NOTIFY_QUEUE, SENT_COPY_QUEUE)

    def __init__(self, settings: Settings, database: Database | None = None, broker: Broker | None = None) -> None:
        super().__init__(settings, database, broker)
        self.sender = ChunkSender(settings, self.database, self.broker)
        self.prefetch = settings.mailer_prefetch
        # Sent folders found by discovery, per IMAP account, for this process's lifetime.
        self.sent_folders: dict[str, str] = {}
        # What comes back (bounces, complaints, replies) read from each account's INBOX; a lease
        # per account keeps one IMAP login per account across all mailers (docs/feedback.md).
        self.inbox_sync = InboxSyncRunner(settings, self.database, self._emit_feedback)

    async def start(self) -> None:
        await self.consume(SEND_QUEUE, self._on_chunk, prefetch=self.prefetch)
        await self.consume(NOTIFY_QUEUE, self._on_notify, prefetch=2)
        await self.consume(ACCOUNT_NOTICE_QUEUE, self._on_account_notice, prefetch=1)
        self.spawn(self._close_idle_connections(), "mailer-idle-smtp")
        # Its own queue and prefetch: a slow or dead IMAP server never holds up sending.
        await self.consume(SENT_COPY_QUEUE, self._on_sent_copy, prefetch=2)
        # Asked for by a user waiting on the page: apart from the send queue, never behind a big send.
        await self.consume(ACCOUNT_CHECK_QUEUE, self._on_account_check, prefetch=2)
        if self.settings.inbox_sync_enabled:
            self.spawn(self.inbox_sync.run(), "mailer-inbox-sync")

    async def on_stop(self) -> None:
        await self.inbox_sync.stop()
        await self.sender.close()

    async def _emit_feedback(self, event: EmailFeedbackEvent) -> None:
        await self.broker.emit(event.type, event)

    async def _on_chunk(self, delivery: Delivery) -> None:
        await self.sender.handle(SendChunk.model_validate_json(delivery.body))

    async def _on_sent_copy(self, delivery: Delivery) -> None:
        message = SentCopy.model_validate_json(delivery.body)
        await copy_to_sent(self.settings, self.database, message, self.sent_folders)

    async def _close_idle_connections(self) -> None:
        while not self.stopping:
            await self.sleep_or_stop(0.5)
            try:
                await self.sender.close_idle_connections()
            except Exception as exc:
                await self.loop_failed("closing idle SMTP connections", exc)

    async def _on_account_check(self, delivery: Delivery) -> None:
        await run_check(self.settings, self.database, CheckEmailAccount.model_validate_json(delivery.body))

    async def _on_account_notice(self, delivery: Delivery) -> None:
        notice = AccountPausedNotice.model_validate_json(delivery.body)
        try:
            await send_account_paused_email(self.settings, self.database, notice)
        except Exception as exc:  # the account itself may be what refuses us; the event still went out
            log.warning("account paused notice not sent", email_account_id=notice.email_account_id, error=str(exc))

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

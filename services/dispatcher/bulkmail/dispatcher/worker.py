"""The dispatcher process: consumes dispatch signals and sweeps unfinished bulk emails on a timer."""

from __future__ import annotations

from bulkmail.dispatcher.service import Dispatcher
from bulkmail.shared.broker import Broker, Delivery
from bulkmail.shared.contracts import DISPATCH_QUEUE, DispatchBulkEmail
from bulkmail.shared.db import Database
from bulkmail.shared.logging import get_logger
from bulkmail.shared.settings import Settings
from bulkmail.shared.worker import Worker

log = get_logger(__name__)


class DispatcherWorker(Worker):
    service = "dispatcher"
    backlog_queues = (DISPATCH_QUEUE,)

    def __init__(self, settings: Settings, database: Database | None = None, broker: Broker | None = None) -> None:
        super().__init__(settings, database, broker)
        self.dispatcher = Dispatcher(settings, self.database, self.broker)

    async def start(self) -> None:
        await self.consume(DISPATCH_QUEUE, self._on_dispatch, prefetch=8)
        self.spawn(self._sweep_loop(), "dispatcher-sweep")

    async def _on_dispatch(self, delivery: Delivery) -> None:
        message = DispatchBulkEmail.model_validate_json(delivery.body)
        await self.dispatcher.handle(message.bulk_email_id)

    async def _sweep_loop(self) -> None:
        while not self.stopping:
            try:
                await self.dispatcher.sweep()
            except Exception as exc:
                await self.loop_failed("sweep", exc)
            await self.sleep_or_stop(self.settings.sweep_interval_s)

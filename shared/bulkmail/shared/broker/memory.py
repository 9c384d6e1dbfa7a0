"""The in-process broker of the embedded mode: asyncio queues with ack-on-return semantics."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bulkmail.shared.broker.base import Broker, Delivery, Handler, topic_matches
from bulkmail.shared.logging import correlation_id, get_logger

log = get_logger(__name__)

# A handler that raises has its message put back after this pause, as RabbitMQ would redeliver it.
REDELIVERY_DELAY_S = 0.5
DRAIN_TIMEOUT_S = 30.0


class MemoryBroker(Broker):
    def __init__(self, namespace: str = "bulkmail") -> None:
        super().__init__(namespace)
        self._queues: dict[str, asyncio.Queue[Delivery]] = {}
        self._subscriptions: list[tuple[str, str]] = []  # (pattern, queue name)
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: dict[str, int] = {}
        self._closing = False

    def _queue(self, name: str) -> asyncio.Queue[Delivery]:
        return self._queues.setdefault(name, asyncio.Queue())

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        """Stop taking deliveries, give the ones in progress time to finish, then stop."""
        self._closing = True
        deadline = asyncio.get_running_loop().time() + DRAIN_TIMEOUT_S
        while any(self._in_flight.values()) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def publish(self, queue: str, body: bytes, headers: dict[str, Any] | None = None) -> None:
        self._queue(self.queue_name(queue)).put_nowait(Delivery(body, dict(headers or {}), queue))

    async def publish_event(self, topic: str, body: bytes, headers: dict[str, Any] | None = None) -> None:
        for pattern, name in self._subscriptions:
            if topic_matches(pattern, topic):
                self._queue(name).put_nowait(Delivery(body, dict(headers or {}), topic))

    async def consume(self, queue: str, handler: Handler, prefetch: int = 10) -> None:
        name = self.queue_name(queue)
        for _ in range(max(1, prefetch)):
            self._start(self._worker(name, handler))

    async def subscribe(self, pattern: str, handler: Handler, queue: str | None = None) -> None:
        name = self.queue_name(queue) if queue else f"{self.events_exchange}.sub{len(self._subscriptions)}"
        if (pattern, name) not in self._subscriptions:
            self._subscriptions.append((pattern, name))
        self._start(self._worker(name, handler))

    async def queue_length(self, queue: str) -> int:
        name = self.queue_name(queue)
        return self._queue(name).qsize() + self._in_flight.get(name, 0)

    async def ping(self) -> None:
        return None

    def _start(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _worker(self, name: str, handler: Handler) -> None:
        q = self._queue(name)
        while not self._closing:
            delivery = await q.get()
            if self._closing:
                q.put_nowait(delivery)
                return
            self._in_flight[name] = self._in_flight.get(name, 0) + 1
            token = correlation_id.set(delivery.correlation_id)
            try:
                await handler(delivery)
            except asyncio.CancelledError:
                q.put_nowait(Delivery(delivery.body, delivery.headers, delivery.routing_key, True))
                raise
            except Exception as exc:
                log.exception("handler failed; message will be redelivered", queue=name)
                self._start(self._requeue_later(q, delivery, exc))
            finally:
                correlation_id.reset(token)
                self._in_flight[name] -= 1

    async def _requeue_later(self, q: asyncio.Queue[Delivery], delivery: Delivery, exc: Exception) -> None:
        if self.handler_failed is not None:
            await self.handler_failed(exc)
        else:
            await asyncio.sleep(REDELIVERY_DELAY_S)
        q.put_nowait(Delivery(delivery.body, delivery.headers, delivery.routing_key, True))

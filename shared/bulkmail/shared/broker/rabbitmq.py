"""RabbitMQ through aio-pika: durable quorum queues, persistent messages, publisher confirms.

The connection is aio-pika's robust one: when RabbitMQ restarts or the network drops, it
reconnects by itself and restores channels, queues and consumers. On top of it this adapter
backs off between attempts (0.5 s doubling to 10 s), reports the state (``bulkmail_dependency_up``,
``bulkmail_reconnects``, ``ping``), and makes a publish wait for the connection to come back
rather than fail at once, so work in progress pauses through a broker restart instead of being
abandoned half-way. A publish retried after a lost confirm may reach the queue twice: every
consumer of our queues is idempotent (the ledger decides what is done), so that is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
    AbstractRobustQueue,
)

from bulkmail.shared import metrics
from bulkmail.shared.broker.base import Broker, Delivery, Handler
from bulkmail.shared.logging import correlation_id, get_logger

log = get_logger(__name__)

# Pause before a failed delivery goes back on the queue, so a poison message cannot spin a core.
REDELIVERY_DELAY_S = 0.5
DRAIN_TIMEOUT_S = 30.0
CLOSE_STEP_TIMEOUT_S = 5.0
# Reconnect attempts: the first soon after the loss, then twice as far apart each time.
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 10.0
# How long a publish waits for a lost connection to come back before it raises.
PUBLISH_WAIT_S = 120.0
# What a publish raises when the connection or its channel went away under it.
_CONNECTION_LOST = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    ConnectionError,
    OSError,
)


class RabbitMQBroker(Broker):
    def __init__(self, url: str, namespace: str = "bulkmail") -> None:
        super().__init__(namespace)
        self._url = url
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractRobustChannel | None = None
        self._events: AbstractRobustExchange | None = None
        self._event_channel: AbstractRobustChannel | None = None
        self._consumer_channels: list[AbstractRobustChannel] = []
        self._declared: dict[str, AbstractRobustQueue] = {}
        self._lock = asyncio.Lock()
        self._consumers: list[tuple[AbstractRobustQueue, str]] = []
        self._in_flight = 0
        self._closing = False
        self._backoff: asyncio.Task[None] | None = None
        # Deliveries being handled, by (routing key, body): a redelivery of one of them waits for it.
        self._handling: dict[tuple[str, bytes], asyncio.Task[bool]] = {}

    async def connect(self) -> None:
        self._closing = False
        self._connection = await aio_pika.connect_robust(
            self._url,
            client_properties={"connection_name": self.namespace},
            reconnect_interval=RECONNECT_FIRST_S,
        )
        self._connection.close_callbacks.add(self._on_connection_lost)
        self._connection.reconnect_callbacks.add(self._on_reconnected)
        metrics.record_dependency("broker", True)
        self._publish_channel = await self._connection.channel(publisher_confirms=True)
        # Events are notifications (the ledger is the record), published per email at full
        # sending speed: their channel skips publisher confirms, which cost a round trip each.
        self._event_channel = await self._connection.channel(publisher_confirms=False)
        self._events = await self._event_channel.declare_exchange(
            self.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )

    def _on_connection_lost(self, _connection: Any, exc: BaseException | None = None) -> None:
        if self._closing:
            return
        # Called again for every failed attempt while it stays down: say it once.
        if metrics.dependency_up("broker") is not False:
            log.warning("lost the connection to RabbitMQ; reconnecting", error=repr(exc))
        metrics.record_dependency("broker", False)
        if self._backoff is None or self._backoff.done():
            self._backoff = asyncio.get_running_loop().create_task(self._back_off())

    def _on_reconnected(self, _connection: Any) -> None:
        log.info("reconnected to RabbitMQ")
        metrics.record_dependency("broker", True)

    async def _back_off(self) -> None:
        """Space the robust connection's attempts out while it stays down, then reset them."""
        connection = self._connection
        if connection is None:
            return
        delay = RECONNECT_FIRST_S
        while not self._closing and not connection.connected.is_set():
            connection.reconnect_interval = delay  # type: ignore[attr-defined]  # RobustConnection has it
            try:
                await asyncio.wait_for(connection.connected.wait(), delay)
            except TimeoutError:
                delay = min(delay * 2, RECONNECT_MAX_S)
        connection.reconnect_interval = RECONNECT_FIRST_S  # type: ignore[attr-defined]

    @property
    def connected(self) -> bool:
        return self._connection is not None and self._connection.connected.is_set()

    async def _publishing(self, publish: Callable[[], Awaitable[Any]]) -> None:
        """``publish()``, waiting for a lost connection to come back (up to PUBLISH_WAIT_S)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUBLISH_WAIT_S
        delay = RECONNECT_FIRST_S
        while True:
            connection = self._connection
            if connection is None or self._closing:
                raise RuntimeError("broker is not connected")
            try:
                if not connection.connected.is_set():
                    await asyncio.wait_for(connection.connected.wait(), max(deadline - loop.time(), 0.01))
                await publish()
                return
            except (*_CONNECTION_LOST, TimeoutError) as exc:
                if loop.time() >= deadline or self._closing:
                    raise
                log.info("publish waits for RabbitMQ", error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)

    async def close(self) -> None:
        """Cancel consumers, let deliveries in progress finish and ack, then disconnect.

        Every step is bounded: right after a reconnect a channel can still be restoring, and a
        stop must not hang on it (anything unacknowledged is redelivered by RabbitMQ anyway).
        """
        self._closing = True
        for queue, tag in self._consumers:
            try:
                await asyncio.wait_for(queue.cancel(tag), CLOSE_STEP_TIMEOUT_S)
            except Exception as exc:
                log.warning("could not cancel a consumer", queue=queue.name, error=repr(exc))
        self._consumers.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_TIMEOUT_S
        while self._in_flight and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self._in_flight:
            log.warning("deliveries still in progress at close; RabbitMQ redelivers them", n=self._in_flight)
        for channel in self._consumer_channels:
            if not channel.is_closed:
                try:
                    await asyncio.wait_for(channel.close(), CLOSE_STEP_TIMEOUT_S)
                except Exception as exc:
                    log.warning("could not close a channel", error=repr(exc))
        self._consumer_channels.clear()
        if self._backoff is not None:
            self._backoff.cancel()
        if self._connection is not None:
            try:
                await asyncio.wait_for(self._connection.close(), CLOSE_STEP_TIMEOUT_S)
            except Exception as exc:
                log.warning("could not close the connection cleanly", error=repr(exc))
        self._connection = None
        self._declared.clear()

    @property
    def _channel(self) -> AbstractRobustChannel:
        if self._publish_channel is None:
            raise RuntimeError("broker is not connected")
        return self._publish_channel

    async def _declare(self, name: str, channel: AbstractRobustChannel | None = None) -> AbstractRobustQueue:
        channel = channel or self._channel
        return await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})

    async def _ensure_queue(self, queue: str) -> str:
        name = self.queue_name(queue)
        if name not in self._declared:
            async with self._lock:
                if name not in self._declared:
                    self._declared[name] = await self._declare(name)
        return name

    async def publish(self, queue: str, body: bytes, headers: dict[str, Any] | None = None) -> None:
        async def once() -> None:
            name = await self._ensure_queue(queue)
            await self._channel.default_exchange.publish(_message(body, headers), routing_key=name)

        await self._publishing(once)

    async def publish_event(self, topic: str, body: bytes, headers: dict[str, Any] | None = None) -> None:
        events = self._events
        assert events is not None, "broker is not connected"
        # Not mandatory: an event nobody subscribed to is simply dropped, not returned to us.
        await self._publishing(lambda: events.publish(_message(body, headers), routing_key=topic, mandatory=False))

    async def consume(self, queue: str, handler: Handler, prefetch: int = 10) -> None:
        channel = await self._consumer_channel(prefetch)
        q = await self._declare(self.queue_name(queue), channel)
        self._consumers.append((q, await q.consume(self._wrap(handler))))

    async def subscribe(self, pattern: str, handler: Handler, queue: str | None = None) -> None:
        channel = await self._consumer_channel(50)
        exchange = await channel.declare_exchange(self.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        if queue:
            q = await self._declare(self.queue_name(queue), channel)
        else:
            q = await channel.declare_queue(exclusive=True, auto_delete=True)
        await q.bind(exchange, routing_key=pattern)
        self._consumers.append((q, await q.consume(self._wrap(handler))))

    async def queue_length(self, queue: str) -> int:
        channel = await self._consumer_channel(1)
        try:
            q = await self._declare(self.queue_name(queue), channel)
            return int(q.declaration_result.message_count or 0)
        finally:
            self._consumer_channels.remove(channel)
            await channel.close()

    async def ping(self) -> None:
        if not self.connected:
            raise ConnectionError("not connected to RabbitMQ (reconnecting)")

    def _wrap(self, handler: Handler) -> Any:
        async def on_message(message: AbstractIncomingMessage) -> None:
            # aiormq runs this callback as a task of the channel and cancels it when the channel
            # closes (RabbitMQ restarting, the network dropping). A handler cancelled half-way
            # through a chunk would leave its claimed recipients "sending" (then "unknown") and
            # its Sent copies "copying": so the handler runs in a task of its own, which
            # finishes its work whatever happens to the channel.
            key = (message.routing_key or "", message.body)
            earlier = self._handling.get(key)
            # RabbitMQ gave back a message this process is still working on (its first channel
            # closed): wait for that work, and do it again only if it failed.
            if earlier is not None and message.redelivered and await asyncio.shield(earlier):
                with contextlib.suppress(*_CONNECTION_LOST):
                    await message.ack()
                return
            task = asyncio.get_running_loop().create_task(self._deliver(handler, message))
            self._handling[key] = task
            task.add_done_callback(lambda t: self._handling.pop(key, None) if self._handling.get(key) is t else None)
            await asyncio.shield(task)

        return on_message

    async def _deliver(self, handler: Handler, message: AbstractIncomingMessage) -> bool:
        """Run ``handler``, then ack (or nack after a failure); True when the handler succeeded."""
        headers = dict(message.headers or {})
        delivery = Delivery(message.body, headers, message.routing_key or "", bool(message.redelivered))
        token = correlation_id.set(delivery.correlation_id)
        self._in_flight += 1
        succeeded = False
        try:
            try:
                await handler(delivery)
                succeeded = True
            except Exception as exc:
                log.exception("handler failed; message will be redelivered", routing_key=message.routing_key)
                if self.handler_failed is not None:
                    await self.handler_failed(exc)
                else:
                    await asyncio.sleep(REDELIVERY_DELAY_S)
                await message.nack(requeue=True)
            else:
                await message.ack()
        except _CONNECTION_LOST as exc:
            # The channel this delivery came on is gone: RabbitMQ already put the message back
            # and redelivers it (to this process, which then knows it is done, or another).
            log.info("delivery's channel closed before its ack; RabbitMQ redelivers it", error=repr(exc))
        finally:
            self._in_flight -= 1
            correlation_id.reset(token)
        return succeeded

    async def _consumer_channel(self, prefetch: int) -> AbstractRobustChannel:
        if self._connection is None:
            raise RuntimeError("broker is not connected")
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        self._consumer_channels.append(channel)
        return channel


def _message(body: bytes, headers: dict[str, Any] | None) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        headers=dict(headers or {}),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )

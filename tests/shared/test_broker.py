"""The broker adapter: one interface, two implementations, the same behaviour."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from bulkmail.shared.broker import Broker, Delivery
from bulkmail.shared.broker.base import topic_matches
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.broker.rabbitmq import RabbitMQBroker
from bulkmail.shared.contracts import SendChunk
from bulkmail.shared.logging import correlation_id
from tests.broker_cleanup import drop_namespace


@pytest.fixture(params=["memory", "rabbitmq"])
async def broker(request, amqp_url):
    namespace = f"bulkmail-broker-test-{uuid.uuid4().hex[:8]}"
    b: Broker = MemoryBroker(namespace) if request.param == "memory" else RabbitMQBroker(amqp_url, namespace)
    await b.connect()
    yield b
    await b.close()
    if request.param == "rabbitmq":
        await drop_namespace(amqp_url, namespace)


async def _collect(n: int, inbox: list[Delivery], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while len(inbox) < n:
            await asyncio.sleep(0.02)


async def test_work_queue_delivers_each_message_once_with_the_correlation_id(broker):
    inbox: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        inbox.append(delivery)

    token = correlation_id.set("cid-123")
    try:
        for i in range(20):
            await broker.send("work", SendChunk(bulk_email_id=i, organization_id=1, chunk_id=i))
    finally:
        correlation_id.reset(token)
    await broker.consume("work", handler, prefetch=5)
    await _collect(20, inbox)
    await asyncio.sleep(0.2)
    assert sorted(SendChunk.model_validate_json(d.body).bulk_email_id for d in inbox) == list(range(20))
    assert {d.correlation_id for d in inbox} == {"cid-123"}


async def test_a_failing_handler_gets_the_message_again(broker):
    attempts: list[bool] = []

    async def flaky(delivery: Delivery) -> None:
        attempts.append(delivery.redelivered)
        if len(attempts) == 1:
            raise RuntimeError("boom")

    await broker.publish("flaky", b"{}")
    await broker.consume("flaky", flaky)
    async with asyncio.timeout(10):
        while len(attempts) < 2:
            await asyncio.sleep(0.02)
    assert attempts == [False, True]


async def test_events_reach_matching_subscribers_only(broker):
    bulk: list[Delivery] = []
    everything: list[Delivery] = []

    async def on_bulk(d: Delivery) -> None:
        bulk.append(d)

    async def on_all(d: Delivery) -> None:
        everything.append(d)

    await broker.subscribe("bulk_email.*", on_bulk)
    await broker.subscribe("#", on_all)
    await broker.publish_event("bulk_email.done", b"1")
    await broker.publish_event("email.sent", b"2")
    await _collect(2, everything)
    await asyncio.sleep(0.2)
    assert [d.routing_key for d in bulk] == ["bulk_email.done"]
    assert sorted(d.routing_key for d in everything) == ["bulk_email.done", "email.sent"]


async def test_close_lets_a_delivery_in_progress_finish(broker):
    finished: list[int] = []
    started = asyncio.Event()

    async def slow(_d: Delivery) -> None:
        started.set()
        await asyncio.sleep(0.5)
        finished.append(1)

    await broker.publish("slow", b"{}")
    await broker.consume("slow", slow)
    await asyncio.wait_for(started.wait(), 10)
    await broker.close()
    assert finished == [1]


def test_topic_patterns():
    assert topic_matches("bulk_email.*", "bulk_email.done")
    assert not topic_matches("bulk_email.*", "email.sent")
    assert topic_matches("#", "a.b.c") and topic_matches("a.#", "a") and topic_matches("*.sent", "email.sent")

"""A worker that cannot subscribe at start tries again on a fresh connection (real RabbitMQ)."""

from __future__ import annotations

import asyncio
import uuid

import aiormq
import pytest

from bulkmail.shared import worker as worker_module
from bulkmail.shared.broker import Delivery
from bulkmail.shared.settings import Settings
from bulkmail.shared.worker import Worker
from tests.broker_cleanup import drop_namespace


class FlakyStart(Worker):
    """Fails its first ``failures`` starts half-way, after spawning a loop and subscribing once."""

    service = "flaky"

    def __init__(self, settings: Settings, failures: int) -> None:
        super().__init__(settings)
        self.failures = failures
        self.starts = 0
        self.loops_running = 0
        self.received: list[bytes] = []

    async def start(self) -> None:
        self.starts += 1
        self.spawn(self._loop(), "flaky-loop")
        await self.broker.consume("work", self._on_work)
        if self.starts <= self.failures:
            raise aiormq.exceptions.ConnectionInternalError("INTERNAL_ERROR")  # as RabbitMQ says it

    async def _loop(self) -> None:
        self.loops_running += 1
        try:
            await asyncio.Event().wait()
        finally:
            self.loops_running -= 1

    async def _on_work(self, delivery: Delivery) -> None:
        self.received.append(delivery.body)


@pytest.fixture
def rabbit_settings(settings_for, amqp_url):  # type: ignore[no-untyped-def]
    return settings_for("postgres", amqp_url=amqp_url, broker_namespace=f"bulkmail-start-{uuid.uuid4().hex[:8]}")


async def test_a_failed_start_is_retried_on_a_fresh_connection(rabbit_settings: Settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(worker_module, "START_ATTEMPTS", 3)
    worker = FlakyStart(rabbit_settings, failures=2)
    try:
        await worker.open()
        assert worker.starts == 3
        await asyncio.sleep(0)
        assert worker.loops_running == 1  # the loops of the failed starts were cancelled
        await worker.broker.publish("work", b"hello")
        for _ in range(100):
            if worker.received:
                break
            await asyncio.sleep(0.05)
        assert worker.received == [b"hello"]  # one consumer: delivered once
    finally:
        await worker.close()
        await drop_namespace(rabbit_settings.amqp_url, rabbit_settings.broker_namespace)


async def test_a_start_that_keeps_failing_gives_up(rabbit_settings: Settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(worker_module, "START_ATTEMPTS", 2)
    worker = FlakyStart(rabbit_settings, failures=5)
    try:
        with pytest.raises(aiormq.exceptions.ConnectionInternalError):
            await worker.open()
        assert worker.starts == 2
    finally:
        await worker.close()
        await drop_namespace(rabbit_settings.amqp_url, rabbit_settings.broker_namespace)

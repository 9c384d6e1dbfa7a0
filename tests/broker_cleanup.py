"""Tests and benchmarks give their RabbitMQ namespace back: its durable queues are deleted.

Every test run uses a namespace of its own; quorum queues left behind pile up in the broker
(each one a small Raft cluster) and slow it down for everyone on the machine.
"""

from __future__ import annotations

import contextlib

import aio_pika

from bulkmail.shared.contracts import QUEUE_CONTRACTS

EXTRA_QUEUES = ("work", "flaky", "slow")


async def drop_namespace(amqp_url: str, namespace: str) -> None:
    connection = await aio_pika.connect(amqp_url, timeout=10)
    try:
        for queue in (*QUEUE_CONTRACTS, *EXTRA_QUEUES):
            channel = await connection.channel()
            with contextlib.suppress(Exception):  # a queue this run never declared
                await channel.queue_delete(f"{namespace}.{queue}")
            with contextlib.suppress(Exception):
                await channel.close()
        channel = await connection.channel()
        with contextlib.suppress(Exception):
            await channel.exchange_delete(f"{namespace}.events")
    finally:
        await connection.close()

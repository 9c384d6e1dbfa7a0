"""What every broker implementation offers."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from bulkmail.shared.logging import correlation_id


@dataclass(frozen=True)
class Delivery:
    """A message handed to a consumer."""

    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    routing_key: str = ""
    redelivered: bool = False

    @property
    def correlation_id(self) -> str:
        return str(self.headers.get("x-correlation-id", ""))


Handler = Callable[[Delivery], Awaitable[None]]
# Awaited after a handler raised and before its message goes back on the queue: the owner can
# hold the message there while, say, the database is down, instead of redelivering it in a loop.
HandlerFailed = Callable[[BaseException], Awaitable[None]]


class Broker(abc.ABC):
    """Work queues (one consumer group per queue) and a topic exchange for events."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.handler_failed: HandlerFailed | None = None

    def queue_name(self, queue: str) -> str:
        return f"{self.namespace}.{queue}"

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}.events"

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def publish(self, queue: str, body: bytes, headers: dict[str, Any] | None = None) -> None:
        """Put a message on a work queue; returns once the broker has it (publisher confirm)."""

    @abc.abstractmethod
    async def publish_event(self, topic: str, body: bytes, headers: dict[str, Any] | None = None) -> None:
        """Publish on the topic exchange; nobody listening is not an error."""

    @abc.abstractmethod
    async def consume(self, queue: str, handler: Handler, prefetch: int = 10) -> None:
        """Start delivering a work queue's messages to ``handler`` until close()."""

    @abc.abstractmethod
    async def subscribe(self, pattern: str, handler: Handler, queue: str | None = None) -> None:
        """Deliver events whose topic matches ``pattern`` (AMQP topic syntax: ``*`` and ``#``).

        With ``queue`` the subscription is durable and shared by every process using that name;
        without it each subscriber gets its own exclusive queue.
        """

    @abc.abstractmethod
    async def queue_length(self, queue: str) -> int: ...

    @abc.abstractmethod
    async def ping(self) -> None: ...

    async def send(self, queue: str, message: BaseModel) -> None:
        await self.publish(queue, message.model_dump_json().encode(), _headers())

    async def emit(self, topic: str, message: BaseModel) -> None:
        await self.publish_event(topic, message.model_dump_json().encode(), _headers())


def _headers() -> dict[str, Any]:
    cid = correlation_id.get()
    return {"x-correlation-id": cid} if cid else {}


def topic_matches(pattern: str, topic: str) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` zero or more words."""
    return _match(pattern.split("."), topic.split("."))


def _match(pat: list[str], words: list[str]) -> bool:
    if not pat:
        return not words
    head, rest = pat[0], pat[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])

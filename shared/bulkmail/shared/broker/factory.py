from __future__ import annotations

from bulkmail.shared.broker.base import Broker
from bulkmail.shared.settings import Settings


def create_broker(settings: Settings) -> Broker:
    url = settings.amqp_url
    if url.startswith("memory://"):
        from bulkmail.shared.broker.memory import MemoryBroker

        return MemoryBroker(settings.broker_namespace)
    if url.startswith(("amqp://", "amqps://")):
        from bulkmail.shared.broker.rabbitmq import RabbitMQBroker

        return RabbitMQBroker(url, settings.broker_namespace)
    raise ValueError(f"BULKMAIL_AMQP_URL must start with amqp://, amqps:// or memory://, not {url.split(':')[0]!r}")

"""The broker adapter: one interface, two implementations chosen by URL.

``amqp://`` → RabbitMQ through aio-pika (durable quorum queues, publisher confirms);
``memory://`` → an in-process broker for the embedded mode. Both give the same guarantees the
services rely on: a delivery is acknowledged only when its handler returns; a handler that
raises gets the message redelivered.
"""

from bulkmail.shared.broker.base import Broker, Delivery, Handler
from bulkmail.shared.broker.factory import create_broker

__all__ = ["Broker", "Delivery", "Handler", "create_broker"]

"""Print bulkmail's AsyncAPI 3.0 document, generated from the pydantic message contracts.

    make asyncapi        # rewrites docs/asyncapi.yaml

A test checks that the committed document matches this output, so the contract and its
description cannot drift apart.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from bulkmail.shared import contracts

EVENTS = {
    "bulk_email.created": "A bulk email was created; its leads are frozen in a snapshot.",
    "bulk_email.processing": "Its recipients are in the ledger; sending has started.",
    "bulk_email.paused": "The user paused it.",
    "bulk_email.resumed": "The user resumed it.",
    "bulk_email.cancelled": "The user cancelled it; unsent recipients are skipped.",
    "bulk_email.done": "Every recipient is in a final state.",
    "bulk_email.error": "It stopped on an error that needs the user.",
    "email.sent": "The SMTP server accepted these recipients' messages (one event per mailer batch).",
    "email.failed": "These recipients' messages failed for good (one event per mailer batch).",
    "email.bounced": "A sent message bounced (bounce_type hard or soft); a hard bounce suppresses the address.",
    "email.complained": "The recipient marked a sent message as spam (ARF report or provider); address suppressed.",
    "email.replied": "The recipient replied to a sent message (In-Reply-To/References name it).",
    "email.opened": "A tracked message was opened (first open per recipient; machine=true: probably not a person).",
    "email.clicked": "A tracked link was clicked (first click per recipient; machine=true: probably a scanner).",
    "email_account.paused": "The provider throttled or refused the account; sending rests until paused_until.",
}
QUEUES = {
    contracts.DISPATCH_QUEUE: "Build a bulk email's ledger, or queue more of its chunks (consumed by the dispatcher).",
    contracts.SEND_QUEUE: "Send one chunk of recipients (consumed by mailers).",
    contracts.NOTIFY_QUEUE: "Send the user's done / error email (consumed by mailers).",
    contracts.ACCOUNT_NOTICE_QUEUE: "Tell an account's owner it is paused and until when (consumed by mailers).",
    contracts.SENT_COPY_QUEUE: "Copy sent messages to the IMAP Sent folder (consumed by mailers).",
    contracts.ACCOUNT_CHECK_QUEUE: (
        "Test an email account's SMTP and IMAP login, or send a user a test message (consumed by mailers)."
    ),
}


def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    def add_schema(model: type[contracts.Contract]) -> str:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[model.__name__] = schema
        return model.__name__

    for event, summary in EVENTS.items():
        model = contracts.EVENT_CONTRACTS.get(event) or contracts.EVENT_CONTRACTS[event.split(".")[0] + ".*"]
        key = event.replace(".", "_")
        messages[key] = {
            "name": event,
            "summary": summary,
            "contentType": "application/json",
            "headers": {"type": "object", "properties": {"x-correlation-id": {"type": "string"}}},
            "payload": {"$ref": f"#/components/schemas/{add_schema(model)}"},
        }
        channels[key] = {
            "address": event,
            "description": f"Routing key {event!r} on the topic exchange '<namespace>.events'.",
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        }
        operations[f"publish_{key}"] = {"action": "send", "channel": {"$ref": f"#/channels/{key}"}}
    for queue, summary in QUEUES.items():
        model = contracts.QUEUE_CONTRACTS[queue]
        key = f"queue_{queue}"
        messages[key] = {
            "name": model.__name__,
            "summary": summary,
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{add_schema(model)}"},
        }
        channels[key] = {
            "address": f"<namespace>.{queue}",
            "description": f"Durable quorum queue. {summary}",
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        }
        operations[f"consume_{queue}"] = {"action": "receive", "channel": {"$ref": f"#/channels/{key}"}}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "bulkmail AMQP interface",
            "version": "1",
            "description": "Work queues between the bulkmail services and lifecycle events on a topic exchange. "
            "Messages carry ids, never whole rows; every contract has a version field `v`.",
        },
        "defaultContentType": "application/json",
        "servers": {"rabbitmq": {"host": "rabbitmq:5672", "protocol": "amqp", "protocolVersion": "0.9.1"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render() -> str:
    return yaml.safe_dump(document(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())

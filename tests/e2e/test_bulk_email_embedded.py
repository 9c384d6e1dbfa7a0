"""End to end on the embedded shape: in-process broker, capture SMTP, each database backend."""

from __future__ import annotations

import json

import httpx

from bulkmail.capture import CaptureServer
from bulkmail.dispatcher.worker import DispatcherWorker
from bulkmail.mailer.worker import MailerWorker
from bulkmail.query_api.app import create_app
from bulkmail.shared.broker import Delivery
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.contracts import BulkEmailEvent
from bulkmail.shared.worker import wait_idle
from tests.conftest import free_port
from tests.e2e.flow import run_flow


async def test_search_preview_send_and_done_email(settings, database, make_tenant):
    fast = settings.model_copy(update={"sweep_interval_s": 0.2, "public_url": "https://bulkmail.example.test"})
    broker = MemoryBroker(fast.broker_namespace)
    tenant = await make_tenant("Flow Org", first_name="Sally", last_name="Seller", email="sally@seller.example")
    app = create_app(fast, database=database, broker=broker)
    workers = [DispatcherWorker(fast, database, broker), MailerWorker(fast, database, broker)]
    events: list[Delivery] = []

    async def on_event(delivery: Delivery) -> None:
        events.append(delivery)

    await broker.subscribe("#", on_event)
    with CaptureServer(port=free_port()) as capture:
        for w in workers:
            await w.open()
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://testserver",
                headers={"Authorization": f"Bearer {tenant.api_key}"},
            ) as client:
                before = _sent_metric()
                done = await run_flow(
                    client, capture.port, capture.messages, "Flow Org", settle=lambda: wait_idle(*workers)
                )
                # Scraped after a real send, the counter moved exactly as the ledger did.
                assert _sent_metric() - before == done["counts"]["sent"] == 3
            # The lifecycle, as other services see it on the topic exchange.
            # (Other events share the exchange: accounts paused by earlier tests' sends on this database.)
            mine = [e for e in events if json.loads(e.body).get("bulk_email_id") == done["id"]]
            kinds = [e.routing_key for e in mine]
            assert kinds[:2] == ["bulk_email.created", "bulk_email.processing"]
            sent_events = [json.loads(e.body) for e in mine if e.routing_key == "email.sent"]
            assert sum(len(e["emails"]) for e in sent_events) == 3 and kinds[-1] == "bulk_email.done"
            final = BulkEmailEvent.model_validate_json(mine[-1].body)
            assert final.counts.sent == 3 and final.status == "done"
        finally:
            await broker.close()
            for w in workers:
                await w.close()


def _sent_metric() -> float:
    """Sum of bulkmail_emails_sent_total over accounts, from the exposition the metrics port serves."""
    from prometheus_client.parser import text_string_to_metric_families

    from bulkmail.shared.metrics import render_metrics

    text = render_metrics()[0].decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "bulkmail_emails_sent"
        for sample in family.samples
        if sample.name == "bulkmail_emails_sent_total"
    )

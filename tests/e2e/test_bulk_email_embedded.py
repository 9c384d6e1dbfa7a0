"""End to end on the embedded shape: in-process broker, capture SMTP, each database backend."""

from __future__ import annotations

import httpx

from bulkmail.capture import CaptureServer
from bulkmail.dispatcher.worker import DispatcherWorker
from bulkmail.mailer.worker import MailerWorker
from bulkmail.query_api.app import create_app
from bulkmail.shared.broker.memory import MemoryBroker
from tests.conftest import free_port
from tests.e2e.flow import run_flow


async def test_search_preview_send_and_done_email(settings, database, make_tenant):
    fast = settings.model_copy(update={"sweep_interval_s": 0.2, "public_url": "https://bulkmail.example.test"})
    broker = MemoryBroker(fast.broker_namespace)
    tenant = await make_tenant("Flow Org", first_name="Sally", last_name="Seller", email="sally@seller.example")
    app = create_app(fast, database=database, broker=broker)
    workers = [DispatcherWorker(fast, database, broker), MailerWorker(fast, database, broker)]
    with CaptureServer(port=free_port()) as capture:
        for w in workers:
            await w.open()
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://testserver",
                headers={"Authorization": f"Bearer {tenant.api_key}"},
            ) as client:
                await run_flow(client, capture.port, capture.messages, "Flow Org")
        finally:
            await broker.close()
            for w in workers:
                await w.close()

"""Burst mode: workers process what is queued, and what that work queues in turn, then return.

A whole send runs to its end without a poll loop or a deadline in the test: the dispatcher
builds the ledger and queues chunks, the mailer sends them and signals back, the dispatcher
finishes the bulk email and queues the done email, the mailer sends it, and then all is idle.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx

from bulkmail.capture import CaptureServer
from bulkmail.dispatcher.worker import DispatcherWorker
from bulkmail.mailer.worker import MailerWorker
from bulkmail.query_api.app import create_app
from bulkmail.shared.broker import Broker
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.broker.rabbitmq import RabbitMQBroker
from bulkmail.shared.db import Database
from bulkmail.shared.organizations import create_organization
from bulkmail.shared.settings import Settings
from bulkmail.shared.worker import run_to_idle
from tests.broker_cleanup import drop_namespace
from tests.conftest import Tenant, free_port

LEADS = ["ada", "bob", "cy", "dee", "eve"]


async def _send_in_burst(settings: Settings, database: Database, broker: Broker, api_key: str) -> None:
    tag = uuid.uuid4().hex[:8]
    with CaptureServer(port=free_port()) as capture:
        app = create_app(settings, database=database, broker=broker)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {api_key}"},
        ) as client:
            for who in LEADS:
                lead = {
                    "name": f"Burst {tag} {who}",
                    "contacts": [{"name": who, "emails": [{"email": f"{who}@{tag}.example"}]}],
                }
                assert (await client.post("/api/v1/lead/", json=lead)).status_code == 201
            template = await client.post(
                "/api/v1/email_template/", json={"name": f"B {tag}", "subject": "s", "body": "b"}
            )
            account = await client.post(
                "/api/v1/email_account/",
                json={
                    "email": f"me@{tag}.example",
                    "smtp_host": "127.0.0.1",
                    "smtp_port": capture.port,
                    "smtp_security": "none",
                },
            )
            created = await client.post(
                "/api/v1/bulk_action/email/",
                json={
                    "query": f'name:"Burst {tag}"',
                    "template_id": template.json()["id"],
                    "email_account_id": account.json()["id"],
                },
            )
            assert created.status_code == 201, created.text

            await run_to_idle(DispatcherWorker(settings, database, broker), MailerWorker(settings, database, broker))

            body = (await client.get(f"/api/v1/bulk_action/email/{created.json()['id']}/")).json()
        assert body["status"] == "done" and body["counts"]["sent"] == len(LEADS), body
        to_leads = sorted(r for m in capture.messages for r in m.rcpt_tos if r.endswith(f"@{tag}.example"))
        assert to_leads == sorted(f"{who}@{tag}.example" for who in LEADS)
        done = [m for m in capture.messages if "is done" in str(m.parsed()["Subject"])]
        assert len(done) == 1  # the done email was queued by the dispatcher and sent by the mailer


async def test_a_send_runs_to_its_end_in_burst_mode(settings: Settings, database: Database, tenant: Tenant) -> None:
    broker = MemoryBroker(f"burst-{uuid.uuid4().hex[:8]}")
    await _send_in_burst(
        settings.model_copy(update={"broker_namespace": broker.namespace}), database, broker, tenant.api_key
    )


async def test_burst_mode_on_postgresql_and_rabbitmq(settings_for: Callable[..., Settings], amqp_url: str) -> None:
    settings = settings_for("postgres", amqp_url=amqp_url, broker_namespace=f"bulkmail-burst-{uuid.uuid4().hex[:8]}")
    database = Database(settings)
    broker = RabbitMQBroker(amqp_url, settings.broker_namespace)
    await broker.connect()
    try:
        async with database.session() as session:
            org = await create_organization(session, "Burst", user_email=f"o-{uuid.uuid4().hex[:6]}@burst.example")
        await _send_in_burst(settings, database, broker, org.api_key)
    finally:
        await broker.close()
        await drop_namespace(amqp_url, settings.broker_namespace)
        await database.dispose()

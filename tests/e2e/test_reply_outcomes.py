"""Each SMTP reply class ends in the right ledger state, through the real pipeline.

A scripted aiosmtpd server answers per recipient: accepted, hard bounce, temporary failure, or
the provider's daily-quota refusal that pauses the whole account.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from bulkmail.capture import CaptureServer
from bulkmail.dispatcher.worker import DispatcherWorker
from bulkmail.mailer.worker import MailerWorker
from bulkmail.query_api.app import create_app
from bulkmail.shared.broker import Delivery
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.models import EmailAccount, Recipient, Suppression
from bulkmail.shared.worker import wait_idle
from tests.conftest import free_port

RCPT_REPLIES = {
    "bounce": "550 5.1.1 The email account that you tried to reach does not exist",
    "later": "451 4.3.0 Mail server temporarily rejected message",
    "quota": "550 5.4.5 Daily user sending quota exceeded. - gsmtp",
}


class Scripted:
    def __init__(self) -> None:
        self.accepted: list[str] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        reply = RCPT_REPLIES.get(address.split("@")[0])
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.accepted.extend(envelope.rcpt_tos)
        return "250 2.0.0 OK queued"


@pytest.fixture
async def pipeline(settings, database, make_tenant):
    scripted = Scripted()
    smtp = Controller(scripted, hostname="127.0.0.1", port=free_port())
    smtp.start()
    system = CaptureServer(port=free_port()).start()
    fast = settings.model_copy(
        update={
            "sweep_interval_s": 0.2,
            "system_smtp_url": f"smtp://127.0.0.1:{system.port}?security=none",
            "system_from_address": "robot@bulkmail.example",
        }
    )
    broker = MemoryBroker(fast.broker_namespace)
    events: list[Delivery] = []

    async def on_event(d: Delivery) -> None:
        events.append(d)

    await broker.subscribe("#", on_event)
    tenant = await make_tenant("Replies", first_name="Owen", email="owen@replies.example")
    workers = [DispatcherWorker(fast, database, broker), MailerWorker(fast, database, broker)]
    for w in workers:
        await w.open()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(fast, database=database, broker=broker)),
        base_url="http://t",
        headers={"Authorization": f"Bearer {tenant.api_key}"},
    )
    template = (await client.post("/api/v1/email_template/", json={"name": "R", "subject": "s", "body": "b"})).json()
    account = (
        await client.post(
            "/api/v1/email_account/",
            json={
                "email": "owen@replies.example",
                "smtp_host": "127.0.0.1",
                "smtp_port": smtp.port,
                "smtp_security": "none",
            },
        )
    ).json()

    async def send(*locals_: str, tag: str, domain: str = "") -> dict:
        for local in locals_:
            await client.post(
                "/api/v1/lead/",
                json={
                    "name": f"{tag} {local}",
                    "contacts": [{"name": local, "emails": [{"email": f"{local}@{domain or tag}.example"}]}],
                },
            )
        created = await client.post(
            "/api/v1/bulk_action/email/",
            json={"query": f'name:"{tag}"', "template_id": template["id"], "email_account_id": account["id"]},
        )
        assert created.status_code == 201, created.text
        return created.json()

    async def settle() -> None:
        """Until the workers have done what is queued (a retry due later is not queued work)."""
        await wait_idle(*workers)

    yield client, send, scripted, system, events, account, settle
    await client.aclose()
    await broker.close()
    for w in workers:
        await w.close()
    smtp.stop()
    system.stop()


async def _states(database, bulk_id: int) -> dict[str, tuple[str, str | None, datetime | None]]:
    async with database.session() as session:
        rows = await session.execute(
            select(Recipient.email, Recipient.state, Recipient.skip_reason, Recipient.next_attempt_at).where(
                Recipient.bulk_email_id == bulk_id
            )
        )
        return {email.split("@")[0]: (str(state), reason, next_at) for email, state, reason, next_at in rows}


async def test_sent_hard_bounce_and_retry_each_end_where_they_should(pipeline, database):
    client, send, scripted, _, events, _, settle = pipeline
    bulk = await send("ok", "bounce", "later", tag="classes")
    await settle()
    states = await _states(database, bulk["id"])
    assert states["ok"][0] == "sent" and scripted.accepted == ["ok@classes.example"]
    assert states["bounce"][0] == "failed"
    assert states["later"][0] == "deferred" and states["later"][2] > datetime.now(UTC)
    # A temporary failure keeps the bulk email going: never done or failed while a retry is due.
    assert (await client.get(f"/api/v1/bulk_action/email/{bulk['id']}/")).json()["status"] == "processing"
    async with database.session() as session:
        suppressed = await session.scalar(
            select(Suppression.reason).where(Suppression.email_normalized == "bounce@classes.example")
        )
    assert suppressed == "hard_bounce"
    failed = [e for e in events if e.routing_key == "email.failed"]
    assert any(b"5.1.1" in e.body for e in failed)

    # The hard-bounced address is skipped by later sends, with that reason.
    again = await send("bounce", tag="classes-again", domain="classes")
    await settle()
    assert (await client.get(f"/api/v1/bulk_action/email/{again['id']}/")).json()["status"] == "done"
    skipped = await _states(database, again["id"])
    assert skipped["bounce"][:2] == ("skipped", "suppressed")


async def test_a_quota_reply_pauses_the_account_tells_the_owner_and_keeps_the_recipients(pipeline, database):
    client, send, _, system, events, account, settle = pipeline
    bulk = await send("quota", "ok", tag="quota")
    await settle()
    paused_events = [json.loads(e.body) for e in events if e.routing_key == "email_account.paused"]
    assert account["id"] in [e["email_account_id"] for e in paused_events]
    async with database.session() as session:
        row = await session.get(EmailAccount, account["id"])
        assert row.paused_until > datetime.now(UTC) and "5.4.5" in row.pause_reason
    states = await _states(database, bulk["id"])
    # Nobody failed: everything waits for the account to come back (the rolling day frees up).
    assert {s[0] for s in states.values()} <= {"deferred", "sent"}
    assert states["quota"][0] == "deferred"
    progress = (await client.get(f"/api/v1/bulk_action/email/{bulk['id']}/")).json()
    assert progress["status"] == "processing"
    # The ETA says why the account is paused and when sending resumes (when the rolling day frees up).
    assert progress["eta_text"].startswith("account paused: 550 5.4.5 daily sending quota reached; resumes ")
    assert progress["eta"] is not None
    # The owner hears of it through the system SMTP account (their own is the one refusing).
    notice = next(m for m in system.messages if "owen@replies.example" in m.rcpt_tos).parsed()
    assert "paused" in str(notice["Subject"]) and "5.4.5" in notice.get_body(("plain",)).get_content()

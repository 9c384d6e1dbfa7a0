"""Consent is checked when a recipient is claimed for sending, not only when the ledger is built.

Each test builds the ledger (the dispatcher), then the recipient's consent goes away the way a
user or a contact would take it away, and only then does the mailer run. The recipient must end
``skipped`` with the reason, and the SMTP server must never see the address.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from bulkmail.dispatcher.service import Dispatcher
from bulkmail.mailer.sender import ChunkSender
from bulkmail.shared import ledger
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.contracts import SendChunk
from bulkmail.shared.db import Database
from bulkmail.shared.models import BulkEmailChunk, Suppression
from bulkmail.shared.settings import Settings
from bulkmail.shared.unsubscribe import make_token
from tests.conftest import Tenant, free_port


@dataclass
class Smtp:
    """Accepts every recipient but those whose local part starts with "later" (451, try again)."""

    delivered: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("later"):
            self.refused.append(address)
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.delivered.extend(envelope.rcpt_tos)
        return "250 2.0.0 OK"


@dataclass
class Send:
    settings: Settings
    database: Database
    broker: MemoryBroker
    tenant: Tenant
    smtp: Smtp
    port: int
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    contacts: dict[str, int] = field(default_factory=dict)

    def address(self, who: str) -> str:
        return f"{who}@{self.tag}.example"

    async def create(self, *whos: str, **account: object) -> int:
        client = self.tenant.client
        for who in whos:
            lead = await client.post(
                "/api/v1/lead/",
                json={
                    "name": f"Consent {self.tag} {who}",
                    "contacts": [{"name": who, "emails": [{"email": self.address(who)}]}],
                },
            )
            assert lead.status_code == 201, lead.text
            self.contacts[who] = lead.json()["contacts"][0]["id"]
        template = await client.post(
            "/api/v1/email_template/", json={"name": f"T {self.tag}", "subject": "s", "body": "b"}
        )
        created_account = await client.post(
            "/api/v1/email_account/",
            json={
                "email": f"me@{self.tag}.example",
                "smtp_host": "127.0.0.1",
                "smtp_port": self.port,
                "smtp_security": "none",
                **account,
            },
        )
        assert created_account.status_code == 201, created_account.text
        bulk = await client.post(
            "/api/v1/bulk_action/email/",
            json={
                "query": f'name:"Consent {self.tag}"',
                "template_id": template.json()["id"],
                "email_account_id": created_account.json()["id"],
            },
        )
        assert bulk.status_code == 201, bulk.text
        bulk_id = int(bulk.json()["id"])
        await Dispatcher(self.settings, self.database, self.broker).handle(bulk_id)  # the ledger is built
        assert (await self.recipients(bulk_id)) == {who: ("pending", None) for who in whos}
        return bulk_id

    async def send(self, bulk_id: int) -> None:
        """The mailer takes every open chunk of the bulk email."""
        async with self.database.session() as session:
            chunks = list(
                await session.scalars(
                    select(BulkEmailChunk.id).where(
                        BulkEmailChunk.bulk_email_id == bulk_id, BulkEmailChunk.done_at.is_(None)
                    )
                )
            )
        assert chunks
        sender = ChunkSender(self.settings, self.database, self.broker)
        try:
            for chunk_id in chunks:
                await sender.handle(
                    SendChunk(bulk_email_id=bulk_id, organization_id=self.tenant.organization_id, chunk_id=chunk_id)
                )
        finally:
            await sender.close()

    async def requeue_retries(self, bulk_id: int, later: timedelta) -> None:
        """What the pump does once the retries are due, as it will do ``later`` from now."""
        async with self.database.session() as session:
            chunk = BulkEmailChunk(
                organization_id=self.tenant.organization_id, bulk_email_id=bulk_id, published_at=datetime.now(UTC)
            )
            session.add(chunk)
            await session.flush()
            queued = await ledger.queue_chunk(session, bulk_id, 10**12, chunk.id, 100, datetime.now(UTC) + later)
            assert queued.size

    async def recipients(self, bulk_id: int) -> dict[str, tuple[str, str | None]]:
        body = (await self.tenant.client.get(f"/api/v1/bulk_action/email/{bulk_id}/recipients/")).json()
        return {r["email"].split("@")[0]: (r["state"], r["skip_reason"]) for r in body["data"]}

    async def unsubscribe_link(self, who: str) -> None:
        token = make_token(self.settings, self.tenant.organization_id, self.address(who))
        page = await self.tenant.client.post(f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click")
        assert page.status_code == 200 and "Unsubscribed" in page.text


@pytest.fixture
async def consent(settings: Settings, database: Database, broker: MemoryBroker, tenant: Tenant) -> AsyncIterator[Send]:
    smtp = Smtp()
    server = Controller(smtp, hostname="127.0.0.1", port=free_port())
    server.start()
    try:
        yield Send(settings, database, broker, tenant, smtp, int(server.port))
    finally:
        server.stop()


async def test_consent_withdrawn_while_waiting_in_a_chunk(consent: Send) -> None:
    bulk_id = await consent.create("keep", "link", "put", "suppressed", "deleted", "changed")
    client = consent.tenant.client

    await consent.unsubscribe_link("link")
    put = await client.put(
        f"/api/v1/contact/{consent.contacts['put']}/",
        json={"name": "put", "emails": [{"email": consent.address("put"), "is_unsubscribed": True}]},
    )
    assert put.status_code == 200, put.text
    async with consent.database.session() as session:  # a hard bounce in another send of the organisation
        session.add(
            Suppression(
                organization_id=consent.tenant.organization_id,
                email_normalized=consent.address("suppressed"),
                reason="hard_bounce",
            )
        )
    assert (await client.delete(f"/api/v1/contact/{consent.contacts['deleted']}/")).status_code == 200
    changed = await client.put(
        f"/api/v1/contact/{consent.contacts['changed']}/",
        json={"name": "changed", "emails": [{"email": consent.address("elsewhere")}]},
    )
    assert changed.status_code == 200, changed.text

    await consent.send(bulk_id)

    assert consent.smtp.delivered == [consent.address("keep")]
    assert await consent.recipients(bulk_id) == {
        "keep": ("sent", None),
        "link": ("skipped", "unsubscribed"),
        "put": ("skipped", "unsubscribed"),
        "suppressed": ("skipped", "suppressed"),
        "deleted": ("skipped", "contact_deleted"),
        "changed": ("skipped", "address_changed"),
    }
    body = (await client.get(f"/api/v1/bulk_action/email/{bulk_id}/")).json()
    assert body["status"] == "processing" or body["status"] == "done"
    assert body["skipped"] == {"unsubscribed": 2, "suppressed": 1, "contact_deleted": 1, "address_changed": 1}


async def test_consent_withdrawn_while_deferred_for_a_retry(consent: Send) -> None:
    bulk_id = await consent.create("keep", "later")
    await consent.send(bulk_id)
    assert consent.smtp.refused == [consent.address("later")]
    assert (await consent.recipients(bulk_id))["later"] == ("deferred", None)

    await consent.unsubscribe_link("later")
    await consent.requeue_retries(bulk_id, timedelta(hours=7))  # past any backoff
    await consent.send(bulk_id)

    assert consent.smtp.refused == [consent.address("later")]  # never offered again
    assert await consent.recipients(bulk_id) == {"keep": ("sent", None), "later": ("skipped", "unsubscribed")}


async def test_consent_withdrawn_while_held_by_the_accounts_limit(consent: Send) -> None:
    bulk_id = await consent.create("first", "held", limit_per_minute=1)
    await consent.send(bulk_id)
    assert consent.smtp.delivered == [consent.address("first")]
    assert (await consent.recipients(bulk_id))["held"] == ("deferred", None)

    async with consent.database.session() as session:
        session.add(
            Suppression(
                organization_id=consent.tenant.organization_id,
                email_normalized=consent.address("held"),
                reason="unsubscribed",
            )
        )
    await consent.requeue_retries(bulk_id, timedelta(minutes=2))
    await consent.send(bulk_id)

    assert consent.smtp.delivered == [consent.address("first")]
    assert await consent.recipients(bulk_id) == {"first": ("sent", None), "held": ("skipped", "unsubscribed")}

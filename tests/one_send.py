"""One bulk email driven step by step: built by the dispatcher, sent chunk by chunk by a mailer.

For tests that change something between the steps (a consent withdrawn, a server gone).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import select

from bulkmail.dispatcher.service import Dispatcher
from bulkmail.mailer.sender import ChunkSender
from bulkmail.shared import ledger
from bulkmail.shared.broker import Broker
from bulkmail.shared.contracts import SendChunk
from bulkmail.shared.db import Database
from bulkmail.shared.models import BulkEmailChunk
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
    broker: Broker
    tenant: Tenant
    smtp: Smtp
    port: int
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    contacts: dict[str, int] = field(default_factory=dict)

    def address(self, who: str) -> str:
        return f"{who}@{self.tag}.example"

    async def create(self, *whos: str, body: str = "b", **account: object) -> int:
        client = self.tenant.client
        run = uuid.uuid4().hex[:8]  # this bulk email's leads and template
        for who in whos:
            lead = await client.post(
                "/api/v1/lead/",
                json={
                    "name": f"Consent {run} {who}",
                    "contacts": [{"name": who, "emails": [{"email": self.address(who)}]}],
                },
            )
            assert lead.status_code == 201, lead.text
            self.contacts[who] = lead.json()["contacts"][0]["id"]
        template = await client.post("/api/v1/email_template/", json={"name": f"T {run}", "subject": "s", "body": body})
        assert template.status_code == 201, template.text
        created_account = await client.post(
            "/api/v1/email_account/",
            json={
                "email": f"me-{run}@{self.tag}.example",
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
                "query": f'name:"Consent {run}"',
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
            assert await ledger.queue_retries(session, bulk_id, chunk.id, 100, datetime.now(UTC) + later)

    async def recipients(self, bulk_id: int) -> dict[str, tuple[str, str | None]]:
        body = (await self.tenant.client.get(f"/api/v1/bulk_action/email/{bulk_id}/recipients/")).json()
        return {r["email"].split("@")[0]: (r["state"], r["skip_reason"]) for r in body["data"]}

    async def unsubscribe_link(self, who: str) -> None:
        token = make_token(self.settings, self.tenant.organization_id, self.address(who))
        page = await self.tenant.client.post(f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click")
        assert page.status_code == 200 and "Unsubscribed" in page.text


@asynccontextmanager
async def one_send(settings: Settings, database: Database, broker: Broker, tenant: Tenant) -> AsyncIterator[Send]:
    """A ``Send`` whose mailer talks to an ``Smtp`` on a loopback port, stopped on the way out."""
    smtp = Smtp()
    server = Controller(smtp, hostname="127.0.0.1", port=free_port())
    server.start()
    try:
        yield Send(settings, database, broker, tenant, smtp, int(server.port))
    finally:
        server.stop()

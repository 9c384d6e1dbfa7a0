"""An account whose server cannot be reached or used is paused, visibly, after a few attempts.

Before, a closed port or a server without AUTH left the bulk email "processing", "sending now",
while every recipient retried with backoff for hours. Now a few failed attempts in a row pause
the account with the server's reply as the reason; the owner is emailed; the bulk email's ETA
says why; the recipients wait (deferred) without losing attempts to the outage or the account's
quota; a pause again before any message went out lasts longer; the next message sent clears it all.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select, update

from bulkmail.capture import CaptureServer
from bulkmail.mailer.notices import send_account_paused_email
from bulkmail.shared.broker import Delivery
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.contracts import ACCOUNT_NOTICE_QUEUE, AccountPausedNotice
from bulkmail.shared.db import Database
from bulkmail.shared.models import EmailAccount, SendSlot
from bulkmail.shared.settings import Settings
from tests.conftest import Tenant, free_port
from tests.one_send import Send, Smtp

LEADS = [f"r{i}" for i in range(10)]


@dataclass
class Outage:
    send: Send
    owner_mail: CaptureServer
    notices: list[AccountPausedNotice]

    async def notices_handled(self) -> None:
        """The owner's notices are emailed by a consumer of their own queue: wait until it is done."""
        for _ in range(1_000):  # at most 10 s
            if not await self.send.broker.queue_length(ACCOUNT_NOTICE_QUEUE):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the account-paused notice was not handled")

    async def account(self, bulk_id: int) -> EmailAccount:
        async with self.send.database.session() as session:
            body = (await self.send.tenant.client.get(f"/api/v1/bulk_action/email/{bulk_id}/")).json()
            account = await session.get_one(EmailAccount, body["email_account_id"])
            session.expunge(account)
            return account

    async def paused_for(self, bulk_id: int) -> timedelta:
        account = await self.account(bulk_id)
        assert account.paused_until is not None
        return account.paused_until - datetime.now(UTC)

    async def let_the_pause_end(self, bulk_id: int) -> None:
        """As if the pause were over (its length is what the test checks, not worth waiting for)."""
        account = await self.account(bulk_id)
        async with self.send.database.session() as session:
            await session.execute(
                update(EmailAccount)
                .where(EmailAccount.id == account.id)
                .values(paused_until=datetime.now(UTC) - timedelta(seconds=1))
            )


@pytest.fixture
async def outage(settings: Settings, database: Database, tenant: Tenant) -> AsyncIterator[Outage]:
    owner_mail = CaptureServer(port=free_port()).start()
    told = settings.model_copy(
        update={
            "system_smtp_url": f"smtp://127.0.0.1:{owner_mail.port}?security=none",
            "system_from_address": "robot@bulkmail.example",
        }
    )
    broker = MemoryBroker(f"unreachable-{uuid.uuid4().hex[:8]}")
    notices: list[AccountPausedNotice] = []

    async def on_notice(delivery: Delivery) -> None:
        notice = AccountPausedNotice.model_validate_json(delivery.body)
        notices.append(notice)
        await send_account_paused_email(told, database, notice)

    await broker.consume(ACCOUNT_NOTICE_QUEUE, on_notice, prefetch=1)
    try:
        yield Outage(Send(told, database, broker, tenant, Smtp(), free_port()), owner_mail, notices)
    finally:
        await broker.close()
        owner_mail.stop()


async def _assert_paused_visibly(outage: Outage, bulk_id: int, reason: str) -> None:
    send = outage.send
    account = await outage.account(bulk_id)
    assert account.paused_until is not None and account.paused_until > datetime.now(UTC)
    assert reason in account.pause_reason
    # Every recipient waits for the account: none failed, none "sending now".
    states = await send.recipients(bulk_id)
    assert {state for state, _ in states.values()} == {"deferred"}
    progress = (await send.tenant.client.get(f"/api/v1/bulk_action/email/{bulk_id}/")).json()
    assert progress["status"] == "processing"
    assert progress["counts"]["deferred"] == len(LEADS) and progress["counts"]["failed"] == 0
    assert progress["eta_text"].startswith(f"account paused: {account.pause_reason}; resumes "), progress["eta_text"]
    # The owner is told, in the server's words.
    await outage.notices_handled()
    assert [n.reason for n in outage.notices] == [account.pause_reason]
    [mail] = outage.owner_mail.messages
    assert "paused" in str(mail.parsed()["Subject"]) and reason in mail.parsed().get_body(("plain",)).get_content()


async def test_a_closed_port_pauses_the_account_and_gives_the_quota_back(outage: Outage) -> None:
    send = outage.send  # send.port: nothing listens there
    bulk_id = await send.create(*LEADS, max_connections=1, limit_per_hour=1000)
    await send.send(bulk_id)

    await _assert_paused_visibly(outage, bulk_id, "cannot connect to the SMTP server")
    account = await outage.account(bulk_id)
    assert account.failures_in_a_row == 3 and account.pauses_in_a_row == 1
    # Three attempts (4, 4 and 2 recipients on the one connection), then the pause: each
    # recipient lost one attempt, and none of the account's hourly quota went on the outage.
    listed = (await send.tenant.client.get(f"/api/v1/bulk_action/email/{bulk_id}/recipients/")).json()["data"]
    assert [r["attempts"] for r in listed] == [1] * len(LEADS)
    async with send.database.session() as session:
        slots = await session.scalar(
            select(func.count()).select_from(SendSlot).where(SendSlot.email_account_id == account.id)
        )
        organisation_slots = await session.scalar(
            select(func.count()).select_from(SendSlot).where(SendSlot.organization_id == account.organization_id)
        )
    assert slots == 0 and organisation_slots == 0


async def test_a_server_without_auth_pauses_the_account(outage: Outage) -> None:
    server = Controller(Smtp(), hostname="127.0.0.1", port=outage.send.port)  # offers no AUTH in plain text
    server.start()
    try:
        send = outage.send
        bulk_id = await send.create(*LEADS, max_connections=1, smtp_username="me", smtp_password="secret-password")
        await send.send(bulk_id)
        await _assert_paused_visibly(outage, bulk_id, "does not offer login")
        assert send.smtp.delivered == []
    finally:
        server.stop()


async def test_each_pause_in_a_row_lasts_longer_until_a_message_goes_out(outage: Outage) -> None:
    send = outage.send
    bulk_id = await send.create(*LEADS, max_connections=1)
    await send.send(bulk_id)
    lengths = [await outage.paused_for(bulk_id)]
    for _ in range(2):  # the server is still down when each pause ends: paused again at once, for longer
        await outage.let_the_pause_end(bulk_id)
        await send.requeue_retries(bulk_id, timedelta(hours=1))
        await send.send(bulk_id)
        lengths.append(await outage.paused_for(bulk_id))
    steps = [timedelta(minutes=2), timedelta(minutes=15), timedelta(hours=1)]
    for length, step in zip(lengths, steps, strict=True):
        assert step - timedelta(minutes=1) < length <= step
    assert (await outage.account(bulk_id)).pauses_in_a_row == 3

    # The server is back: the first message sent clears the pause reason and the counts.
    server = Controller(send.smtp, hostname="127.0.0.1", port=send.port)
    server.start()
    try:
        await outage.let_the_pause_end(bulk_id)
        await send.requeue_retries(bulk_id, timedelta(hours=7))
        await send.send(bulk_id)
    finally:
        server.stop()
    assert sorted(send.smtp.delivered) == sorted(send.address(who) for who in LEADS)
    account = await outage.account(bulk_id)
    assert (account.pause_reason, account.pauses_in_a_row, account.failures_in_a_row) == ("", 0, 0)

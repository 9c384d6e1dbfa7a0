"""Sent copies through the whole flow: API → dispatcher → mailer → SMTP (capture) → IMAP (a real Dovecot).

Invariant 6: SMTP first, then IMAP. A dead IMAP server must not delay sending; its copies end
``failed`` and the dispatcher's sweep retries them until the server is back.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import select, update

from bulkmail.capture import CaptureServer
from bulkmail.dispatcher.service import SentCopyRetry
from bulkmail.dispatcher.worker import DispatcherWorker
from bulkmail.mailer import sent_copies
from bulkmail.mailer.sent_copies import copy_to_sent
from bulkmail.mailer.sent_copy import ImapSettings
from bulkmail.mailer.worker import MailerWorker
from bulkmail.query_api.app import create_app
from bulkmail.shared import bulk_emails, ledger, metrics
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.contracts import SentCopy
from bulkmail.shared.db import Database
from bulkmail.shared.models import BulkEmail, BulkEmailStatus, EmailAccount, Recipient
from bulkmail.shared.secrets import SecretBox
from bulkmail.shared.settings import Settings
from bulkmail.shared.worker import wait_idle
from tests.conftest import free_port

if TYPE_CHECKING:
    from tests.mail_servers import Dovecot

pytest_plugins = ["tests.mail_servers"]

HOST = "127.0.0.1"
FAST_RETRY = SentCopyRetry(
    every=0.2,
    first=timedelta(seconds=0.3),
    lost=timedelta(seconds=5),
    stuck=timedelta(seconds=5),
)


@dataclass
class Flow:
    client: httpx.AsyncClient
    capture: CaptureServer
    dispatcher: DispatcherWorker
    mailer: MailerWorker
    database: Database
    settings: Settings
    domain: str  # the account's domain, in every Message-ID: unique per test, so Dovecot's boxes can be shared

    async def send(self, **account: Any) -> tuple[int, int]:
        """Three leads, one template, one account; returns (bulk email id, account id) when it is done."""
        for name in ("Ada", "Bob", "Cy"):
            lead = {
                "name": f"{name} Corp",
                "status": "Potential",
                "contacts": [{"name": f"{name} Lead", "emails": [{"email": f"{name.lower()}@{self.domain}.lead"}]}],
            }
            assert (await self.client.post("/api/v1/lead/", json=lead)).status_code == 201
        template = (
            await self.client.post(
                "/api/v1/email_template/",
                json={
                    "name": "Hi",
                    "subject": "Hi {{ lead.display_name }}",
                    "body": "<p>Hello {{ contact.first_name }}</p>",
                },
            )
        ).json()
        fields = {
            "email": f"sally@{self.domain}.example",
            "name": "Sally",
            "smtp_host": HOST,
            "smtp_port": self.capture.port,
            "smtp_security": "none",
            **account,
        }
        created = await self.client.post("/api/v1/email_account/", json=fields)
        assert created.status_code == 201, created.text
        body = {"query": "status:potential", "template_id": template["id"], "email_account_id": created.json()["id"]}
        bulk = await self.client.post("/api/v1/bulk_action/email/", json=body)
        assert bulk.status_code == 201, bulk.text
        bulk_id = bulk.json()["id"]
        await self.run_to_idle()
        status = (await self.client.get(f"/api/v1/bulk_action/email/{bulk_id}/")).json()
        assert status["status"] == "done" and status["counts"]["sent"] == 3, status
        return bulk_id, created.json()["id"]

    async def run_to_idle(self) -> None:
        """Until the dispatcher and the mailer have done what is queued (the send, its Sent copies)."""
        await wait_idle(self.dispatcher, self.mailer)

    async def copies(self, bulk_id: int) -> list[tuple[str, str, str]]:
        """(message_id, sent_copy_state, sent_copy_uid) per recipient."""
        async with self.database.session() as session:
            rows = await session.execute(
                select(Recipient.message_id, Recipient.sent_copy_state, Recipient.sent_copy_uid)
                .where(Recipient.bulk_email_id == bulk_id)
                .order_by(Recipient.id)
            )
            return [(m, s or "", u) for m, s, u in rows]

    async def wait_copies(self, bulk_id: int, state: str, timeout: float = 20) -> list[tuple[str, str, str]]:
        """Until the dispatcher's sweep (a timer, not queued work) has brought every copy to ``state``."""
        deadline = time.monotonic() + timeout
        while True:
            rows = await self.copies(bulk_id)
            if all(s == state for _, s, _ in rows):
                return rows
            assert time.monotonic() < deadline, f"copies not all {state}: {rows}"
            await asyncio.sleep(0.05)


async def cancel_earlier_tests_sends(database: Database) -> None:
    """Earlier tests on this session's shared database stop their workers with bulk emails still
    sending. This test's dispatcher would finish them, and their done emails, to SMTP servers long
    gone, would keep its mailer busy with retries for a minute before ``wait_idle`` saw it idle
    (57 s of each backend's first flow). Cancelled, they are no one's work."""
    async with database.session() as session:
        await session.execute(
            update(BulkEmail)
            .where(BulkEmail.status.in_(bulk_emails.ACTIVE_STATUSES))
            .values(status=BulkEmailStatus.cancelled)
        )


@asynccontextmanager
async def running(settings: Settings, database: Database, make_tenant: Any) -> AsyncIterator[Flow]:
    await cancel_earlier_tests_sends(database)
    fast = settings.model_copy(update={"sweep_interval_s": 0.1})
    broker = MemoryBroker(f"sent-copies-{uuid.uuid4().hex[:8]}")
    tenant = await make_tenant("Copies Org", first_name="Sally", email=f"sally-{uuid.uuid4().hex[:8]}@copies.example")
    dispatcher, mailer = DispatcherWorker(fast, database, broker), MailerWorker(fast, database, broker)
    dispatcher.dispatcher.sent_copy_retry = FAST_RETRY
    with CaptureServer(port=free_port()) as capture:
        for w in (dispatcher, mailer):
            await w.open()
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(fast, database=database, broker=broker)),
                base_url="http://testserver",
                headers={"Authorization": f"Bearer {tenant.api_key}"},
            ) as client:
                yield Flow(client, capture, dispatcher, mailer, database, fast, f"d{uuid.uuid4().hex[:10]}")
        finally:
            await broker.close()
            for w in (dispatcher, mailer):
                await w.close()


def imap_of(dovecot: Dovecot, port: int | None = None) -> dict[str, Any]:
    return {
        "imap_host": HOST,
        "imap_port": port or dovecot.port,
        "imap_security": "none",
        "imap_username": "alice",
        "imap_password": dovecot.users["alice"],
    }


def without_date(raw: bytes) -> bytes:
    # The sender dates its message when it builds it; the copy carries the recorded sent_at.
    # Dovecot's maildir keeps LF line ends; the message went out with CRLF.
    return re.sub(rb"(?m)^Date: [^\n]*\n", b"", raw.replace(b"\r\n", b"\n"))


def copies_metric(account_id: int, outcome: str) -> float:
    return float(metrics.IMAP_COPIES.labels(account_id=metrics.account_label(account_id), outcome=outcome)._value.get())


async def test_every_sent_message_lands_once_in_sent_as_sent(settings, database, make_tenant, dovecot) -> None:
    async with running(settings, database, make_tenant) as flow:
        bulk_id, account_id = await flow.send(**imap_of(dovecot))
        rows = await flow.copies(bulk_id)  # the copies were queued work: done by the time the send is
        assert {state for _, state, _ in rows} == {"appended"}, rows

        sent = {m.parsed()["Message-ID"]: m.data for m in flow.capture.messages if flow.domain in m.rcpt_tos[0]}
        assert sorted(sent) == sorted(mid for mid, _, _ in rows)
        for message_id, _, uid in rows:
            assert re.fullmatch(r"\d+:\d+", uid)
            [stored] = [p for p in dovecot.message_files("alice", "Sent") if message_id.encode() in p.read_bytes()]
            assert stored.name.endswith(":2,S")  # \Seen
            assert without_date(stored.read_bytes()) == without_date(sent[message_id])
        async with database.session() as session:
            account = await session.get(EmailAccount, account_id)
            assert account is not None and account.sent_folder_discovered == "Sent"

        # An outcome recorded as unknown is retried with a Message-ID search first: still one copy.
        async with database.session() as session:
            await session.execute(
                update(Recipient).where(Recipient.bulk_email_id == bulk_id).values(sent_copy_state="unknown")
            )
        ids = await _recipient_ids(database, bulk_id)
        org_id = await _org_of(database, bulk_id)
        await copy_to_sent(
            flow.settings, database, SentCopy(organization_id=org_id, bulk_email_id=bulk_id, recipient_ids=ids), {}
        )
        # The dispatcher's sweep retries unknown copies too (every 0.1 s here), so one may still be
        # "copying" on the worker's side as this call returns: wait for both to settle.
        assert await flow.wait_copies(bulk_id, "appended") == rows  # same uids: the earlier copies were found
        for message_id, _, _ in rows:
            assert dovecot.count_with_header("alice", "Sent", message_id.encode()) == 1

        # Copies left "copying" by a worker that stopped: the sweep makes them unknown, then retries.
        # Sent just now: a retry's backoff grows with the time since the send, which this test
        # (about the states, not the spacing) should not depend on.
        async with database.session() as session:
            await session.execute(
                update(Recipient)
                .where(Recipient.bulk_email_id == bulk_id)
                .values(
                    sent_copy_state="copying",
                    sent_at=datetime.now(UTC),
                    updated_at=datetime.now(UTC) - timedelta(hours=1),
                )
            )
        assert await flow.wait_copies(bulk_id, "appended") == rows
        for message_id, _, _ in rows:
            assert dovecot.count_with_header("alice", "Sent", message_id.encode()) == 1


async def test_gmail_rules_skip_the_copy(
    settings, database, make_tenant, dovecot, dovecot_gmail_layout, unused_port
) -> None:
    box = SecretBox.from_settings(settings)
    async with running(settings, database, make_tenant) as flow:
        # The account's own setting: the sender marks them skipped and queues nothing.
        bulk_id, account_id = await flow.send(**imap_of(dovecot), sent_copy_mode="never")
        rows = await flow.copies(bulk_id)
        assert {state for _, state, _ in rows} == {"skipped"}, rows
        for message_id, _, _ in rows:
            assert dovecot.count_with_header("alice", "Sent", message_id.encode()) == 0

        # The provider rule, applied again by the consumer: the account now sends through Gmail's
        # SMTP, which files Sent Mail itself. No IMAP connection is even attempted.
        connections: list[asyncio.StreamWriter] = []

        def record(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(writer)
            writer.close()

        server = await asyncio.start_server(record, HOST, unused_port)
        async with database.session() as session:
            await session.execute(
                update(EmailAccount)
                .where(EmailAccount.id == account_id)
                .values(smtp_host="smtp.gmail.com", sent_copy_mode="auto", imap_port=unused_port)
            )
            await session.execute(
                update(Recipient).where(Recipient.bulk_email_id == bulk_id).values(sent_copy_state="pending")
            )
        ids = await _recipient_ids(database, bulk_id)
        message = SentCopy(organization_id=await _org_of(database, bulk_id), bulk_email_id=bulk_id, recipient_ids=ids)
        await copy_to_sent(flow.settings, database, message, {})
        server.close()
        assert [s for _, s, _ in await flow.copies(bulk_id)] == ["skipped"] * 3
        assert connections == []

        # A Gmail mailbox behind a custom host name shows itself only after login (X-GM-EXT-1):
        # over 10,000 leads, the first copy goes in and the rest of the bulk email is skipped.
        gmail = dovecot_gmail_layout
        async with database.session() as session:
            await session.execute(
                update(EmailAccount)
                .where(EmailAccount.id == account_id)
                .values(smtp_host=HOST, imap_port=gmail.port, imap_password_encrypted=box.encrypt(gmail.users["alice"]))
            )
            await session.execute(update(BulkEmail).where(BulkEmail.id == bulk_id).values(n_leads=20_000))
            await session.execute(
                update(Recipient).where(Recipient.bulk_email_id == bulk_id).values(sent_copy_state="pending")
            )
        await copy_to_sent(flow.settings, database, message, {})
        rows = await flow.copies(bulk_id)
        assert [s for _, s, _ in rows] == ["appended", "skipped", "skipped"]
        assert gmail.count_with_header("alice", "[Gmail]/Sent Mail", rows[0][0].encode()) == 1


async def test_dead_imap_never_delays_sending_and_copies_catch_up(
    settings, database, make_tenant, dovecot, unused_port
) -> None:
    async with running(settings, database, make_tenant) as flow:
        started = time.monotonic()
        bulk_id, account_id = await flow.send(**imap_of(dovecot, port=unused_port))
        assert time.monotonic() - started < 10  # sent and done while IMAP refuses every connection
        rows = await flow.wait_copies(bulk_id, "failed")
        assert copies_metric(account_id, "failed") >= 3
        for message_id, _, _ in rows:
            assert dovecot.count_with_header("alice", "Sent", message_id.encode()) == 0

        # The server comes back at the same address: the sweep's retries copy every message, once.
        async with forward(unused_port, dovecot.port):
            rows = await flow.wait_copies(bulk_id, "appended", timeout=30)
        assert copies_metric(account_id, "retried") >= 3
        for message_id, _, _ in rows:
            assert dovecot.count_with_header("alice", "Sent", message_id.encode()) == 1


@asynccontextmanager
async def forward(listen_port: int, target_port: int) -> AsyncIterator[None]:
    """A TCP forwarder: the IMAP server "comes up" on the port the account points at."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(HOST, target_port)
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    server = await asyncio.start_server(handle, HOST, listen_port)
    try:
        yield
    finally:
        server.close()


async def _recipient_ids(database: Database, bulk_id: int) -> list[int]:
    async with database.session() as session:
        return list(await session.scalars(select(Recipient.id).where(Recipient.bulk_email_id == bulk_id)))


async def _org_of(database: Database, bulk_id: int) -> int:
    async with database.session() as session:
        org = await session.scalar(select(Recipient.organization_id).where(Recipient.bulk_email_id == bulk_id).limit(1))
        assert org is not None
        return int(org)


# ---------------------------------------------------------------------------------------------
# The claim's lease: a killed worker's copies are handed on after COPY_LEASE, a live one's never


async def _states_and_touch(database: Database, bulk_id: int) -> list[tuple[str, datetime]]:
    async with database.session() as session:
        rows = await session.execute(
            select(Recipient.sent_copy_state, Recipient.updated_at)
            .where(Recipient.bulk_email_id == bulk_id)
            .order_by(Recipient.id)
        )
        return [(str(s), u) for s, u in rows]


async def test_copies_a_killed_worker_left_copying_are_handed_on_once_its_lease_ran_out(
    settings, database, make_tenant, dovecot
) -> None:
    async with running(settings, database, make_tenant) as flow:
        # The real lease, not the fast test policy: only the claim's age decides.
        flow.dispatcher.dispatcher.sent_copy_retry = replace(FAST_RETRY, stuck=ledger.COPY_LEASE)
        bulk_id, _ = await flow.send(**imap_of(dovecot))
        rows = await flow.wait_copies(bulk_id, "appended")
        ids = await _recipient_ids(database, bulk_id)
        now = datetime.now(UTC)
        # Two copies claimed by a worker that was killed (its last renewal just past the lease),
        # one by a worker still alive (renewed a moment ago): copying, and stored or not.
        async with database.session() as session:
            await session.execute(
                update(Recipient)
                .where(Recipient.id.in_(ids[:2]))
                .values(sent_copy_state="copying", updated_at=now - ledger.COPY_LEASE - timedelta(seconds=1))
            )
            await session.execute(
                update(Recipient).where(Recipient.id == ids[2]).values(sent_copy_state="copying", updated_at=now)
            )
        deadline = time.monotonic() + 20
        while [s for _, s, _ in await flow.copies(bulk_id)][:2] != ["appended", "appended"]:
            assert time.monotonic() < deadline, await flow.copies(bulk_id)
            await asyncio.sleep(0.05)
        after = await flow.copies(bulk_id)
        assert after[:2] == rows[:2]  # found by their Message-ID: the same uids, nothing appended again
        assert after[2][1] == "copying"  # a live worker's lease is never taken
        for message_id, _, _ in rows:
            assert dovecot.count_with_header("alice", "Sent", message_id.encode()) == 1


async def test_the_lease_is_renewed_while_an_append_hangs(
    settings, database, make_tenant, dovecot, cutting_proxy, monkeypatch
) -> None:
    monkeypatch.setattr(sent_copies, "COPY_LEASE_RENEW", timedelta(seconds=0.2))
    short = ImapSettings.from_account

    def quick(account: Any, password: str, **overrides: Any) -> ImapSettings:
        return short(account, password, **{"command_timeout": 3.0, "total_timeout": 3.0, **overrides})

    monkeypatch.setattr(sent_copies.ImapSettings, "from_account", quick)
    async with running(settings, database, make_tenant) as flow:
        proxy = await cutting_proxy(dovecot.port)
        bulk_id, _ = await flow.send(**imap_of(dovecot, port=proxy.port), sent_copy_mode="never")
        proxy.stall_when_client_sends(b"APPEND")  # the first APPEND gets no answer, ever
        message = await _copies_wanted_after_all(database, flow, bulk_id)
        copying = asyncio.create_task(copy_to_sent(flow.settings, database, message, {}))
        await asyncio.sleep(0.5)
        first = await _states_and_touch(database, bulk_id)
        await asyncio.sleep(1.0)
        later = await _states_and_touch(database, bulk_id)
        assert [s for s, _ in first] == [s for s, _ in later] == ["copying"] * 3
        assert all(b > a for (_, a), (_, b) in zip(first, later, strict=True))  # renewed meanwhile
        await copying  # the hung APPEND times out: unknown; the rest of the batch, never tried, failed
        assert [s for s, _ in await _states_and_touch(database, bulk_id)] == ["unknown", "failed", "failed"]


async def test_a_worker_that_cannot_renew_its_lease_starts_no_more_appends(
    settings, database, make_tenant, dovecot, monkeypatch
) -> None:
    monkeypatch.setattr(sent_copies, "COPY_LEASE_RENEW", timedelta(seconds=0.1))
    monkeypatch.setattr(sent_copies, "COPY_LEASE_START", timedelta(seconds=0.5))

    async def database_away(*_args: Any) -> int:
        raise ConnectionError("the database went away")

    monkeypatch.setattr(ledger, "renew_copies", database_away)
    real_append = sent_copies._append

    async def slow_append(*args: Any) -> Any:
        await asyncio.sleep(0.7)  # longer than COPY_LEASE_START without a renewal
        return await real_append(*args)

    monkeypatch.setattr(sent_copies, "_append", slow_append)
    async with running(settings, database, make_tenant) as flow:
        bulk_id, _ = await flow.send(**imap_of(dovecot), sent_copy_mode="never")
        message = await _copies_wanted_after_all(database, flow, bulk_id)
        await copy_to_sent(flow.settings, database, message, {})
        rows = await flow.copies(bulk_id)
        # The first APPEND started inside the lease; none after it: the rest wait for the sweep.
        assert [s for _, s, _ in rows] == ["appended", "copying", "copying"]
        assert [dovecot.count_with_header("alice", "Sent", m.encode()) for m, _, _ in rows] == [1, 0, 0]


async def _copies_wanted_after_all(database: Database, flow: Any, bulk_id: int) -> SentCopy:
    """A bulk email sent without Sent copies, switched to copies: its SentCopy message, every copy pending."""
    async with database.session() as session:
        await session.execute(
            update(Recipient).where(Recipient.bulk_email_id == bulk_id).values(sent_copy_state="pending")
        )
        await session.execute(
            update(EmailAccount)
            .where(EmailAccount.email == f"sally@{flow.domain}.example")
            .values(sent_copy_mode="always")
        )
    ids = await _recipient_ids(database, bulk_id)
    return SentCopy(organization_id=await _org_of(database, bulk_id), bulk_email_id=bulk_id, recipient_ids=ids)

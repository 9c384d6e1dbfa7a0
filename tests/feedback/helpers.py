"""A bulk email already sent, made directly in the database, and an IMAP client for the INBOX."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from bulkmail.mailer.message import make_message_id
from bulkmail.mailer.sent_copy import ImapSession, ImapSettings
from bulkmail.shared.db import Database
from bulkmail.shared.models import (
    BulkEmail,
    BulkEmailStatus,
    Contact,
    ContactEmail,
    EmailAccount,
    EmailActivity,
    EmailFeedback,
    EmailTemplate,
    Lead,
    Recipient,
    RecipientState,
    Suppression,
)
from bulkmail.shared.organizations import create_organization
from bulkmail.shared.secrets import SecretBox
from bulkmail.shared.settings import Settings

HOST = "127.0.0.1"


@dataclass
class SentRecipient:
    id: int
    lead_id: int
    email: str
    message_id: str


@dataclass
class SentBulk:
    organization_id: int
    account_id: int
    template_id: int
    bulk_email_id: int
    recipients: list[SentRecipient]


async def make_account(
    settings: Settings, database: Database, imap_port: int, *, user: str = "alice", password: str = "alicepw"
) -> tuple[int, int, int]:
    """(organisation id, account id, template id): an account whose IMAP is the test Dovecot."""
    box = SecretBox.from_settings(settings)
    domain = f"s{uuid.uuid4().hex[:8]}.test"
    async with database.session() as session:
        org = await create_organization(session, f"Feedback {domain}", user_email=f"owner@{domain}")
        account = EmailAccount(
            organization_id=org.organization_id,
            email=f"alice@{domain}",
            smtp_host=HOST,
            imap_host=HOST,
            imap_port=imap_port,
            imap_security="none",
            imap_username=user,
            imap_password_encrypted=box.encrypt(password),
        )
        template = EmailTemplate(organization_id=org.organization_id, name="t", subject="Quick question", body="b")
        session.add_all([account, template])
        await session.flush()
        return org.organization_id, account.id, template.id


async def make_sent_bulk(
    database: Database, organization_id: int, account_id: int, template_id: int, addresses: list[str]
) -> SentBulk:
    """A done bulk email whose recipients were all sent (with their activities), as the mailer leaves it."""
    now = datetime.now(UTC) - timedelta(minutes=5)
    async with database.session() as session:
        account = await session.get(EmailAccount, account_id)
        assert account is not None
        bulk = BulkEmail(
            organization_id=organization_id,
            template_id=template_id,
            email_account_id=account_id,
            status=BulkEmailStatus.done,
            n_leads=len(addresses),
            n_objects=len(addresses),
        )
        session.add(bulk)
        await session.flush()
        sent: list[SentRecipient] = []
        for address in addresses:
            lead = Lead(organization_id=organization_id, name=address)
            session.add(lead)
            await session.flush()
            contact = Contact(organization_id=organization_id, lead_id=lead.id, name="Bob Buyer")
            session.add(contact)
            await session.flush()
            session.add(
                ContactEmail(
                    organization_id=organization_id,
                    contact_id=contact.id,
                    lead_id=lead.id,
                    email=address,
                    email_normalized=address.lower(),
                )
            )
            recipient = Recipient(
                organization_id=organization_id,
                bulk_email_id=bulk.id,
                lead_id=lead.id,
                contact_id=contact.id,
                email=address,
                email_normalized=address.lower(),
                state=RecipientState.sent,
                sent_at=now,
            )
            session.add(recipient)
            await session.flush()
            recipient.message_id = make_message_id(bulk.id, recipient.id, account.email.rpartition("@")[2], b"k")
            session.add(
                EmailActivity(
                    organization_id=organization_id,
                    lead_id=lead.id,
                    contact_id=contact.id,
                    template_id=template_id,
                    bulk_email_id=bulk.id,
                    status="sent",
                    direction="outgoing",
                    to_address=address,
                    message_id=recipient.message_id,
                    date_sent=now,
                )
            )
            sent.append(SentRecipient(recipient.id, lead.id, address, recipient.message_id))
        return SentBulk(organization_id, account_id, template_id, bulk.id, sent)


async def states(database: Database, bulk_email_id: int) -> dict[str, str]:
    async with database.session() as session:
        rows = await session.execute(
            select(Recipient.email, Recipient.state).where(Recipient.bulk_email_id == bulk_email_id)
        )
        return {email: RecipientState(state).value for email, state in rows}


async def suppressions(database: Database, organization_id: int) -> dict[str, str]:
    async with database.session() as session:
        rows = await session.execute(
            select(Suppression.email_normalized, Suppression.reason).where(
                Suppression.organization_id == organization_id
            )
        )
        return {email: reason for email, reason in rows}


async def feedback_counts(database: Database, organization_id: int) -> dict[str, int]:
    async with database.session() as session:
        rows = await session.execute(
            select(EmailFeedback.kind, func.count())
            .where(EmailFeedback.organization_id == organization_id)
            .group_by(EmailFeedback.kind)
        )
        return {str(kind.value if hasattr(kind, "value") else kind): n for kind, n in rows}


class Mailbox:
    """The user's own mail client, for APPENDing what arrives and reading flags."""

    def __init__(self, port: int, user: str = "alice", password: str = "alicepw") -> None:
        self.session = ImapSession(
            ImapSettings(host=HOST, port=port, username=user, password=password, security="none")
        )

    async def __aenter__(self) -> Mailbox:
        await self.session.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    async def deliver(self, message: bytes, flags: str | None = None) -> int:
        response = await self.session.call(self.session.imap.append(message, mailbox="INBOX", flags=flags))
        assert response.result == "OK", response
        return int(response.lines[-1].split(b"]")[0].split()[-1])  # [APPENDUID v uid]

    async def flags(self) -> dict[int, set[str]]:
        from bulkmail.mailer.inbox_sync import parse_fetch

        await self.session.call(self.session.imap.select("INBOX"))
        response = await self.session.call(self.session.imap.uid("fetch", "1:*", "(UID FLAGS)"))
        return {m.uid: m.flags - {"\\Recent"} for m in parse_fetch(response.lines)}

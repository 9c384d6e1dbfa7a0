"""Every query of the bulk email domain in the query-api (writes to the ledger's rows go through
``bulkmail.shared.ledger``, status changes through ``bulkmail.shared.bulk_emails``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.models import BulkEmail, EmailAccount, Recipient, RecipientState


def bulk_emails_of(organization_id: int, template_id: int | None = None) -> Select[Any]:
    """The organisation's bulk emails, newest first (of one template when given: Close's filter)."""
    stmt = select(BulkEmail).where(BulkEmail.organization_id == organization_id).order_by(BulkEmail.id.desc())
    return stmt.where(BulkEmail.template_id == template_id) if template_id is not None else stmt


def recipients_of(bulk_email_id: int, state: RecipientState | None = None) -> Select[Any]:
    """The per-recipient delivery report, in ledger order, optionally of one state."""
    stmt = select(Recipient).where(Recipient.bulk_email_id == bulk_email_id).order_by(Recipient.id)
    return stmt.where(Recipient.state == state) if state is not None else stmt


async def has_recipients(session: AsyncSession, bulk_email_id: int) -> bool:
    """Whether the dispatcher has built any of the bulk email's ledger yet."""
    return bool(await session.scalar(select(exists().where(Recipient.bulk_email_id == bulk_email_id))))


async def account_sending_as(session: AsyncSession, organization_id: int, address: str) -> EmailAccount | None:
    """The organisation's (first) email account whose address is ``address``, case-insensitively."""
    return await session.scalar(
        select(EmailAccount)
        .where(EmailAccount.organization_id == organization_id, func.lower(EmailAccount.email) == address)
        .order_by(EmailAccount.id)
        .limit(1)
    )


async def by_idempotency_key(session: AsyncSession, organization_id: int, key: str) -> BulkEmail | None:
    return await session.scalar(
        select(BulkEmail).where(BulkEmail.organization_id == organization_id, BulkEmail.idempotency_key == key)
    )

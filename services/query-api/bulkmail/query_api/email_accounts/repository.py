"""Every query of the email account domain."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared import bulk_emails
from bulkmail.shared.models import BulkEmail, EmailAccount


def accounts_of(organization_id: int) -> Select[Any]:
    return select(EmailAccount).where(EmailAccount.organization_id == organization_id).order_by(EmailAccount.id)


async def unfinished_bulk_email(session: AsyncSession, account_id: int) -> int | None:
    """A bulk email still sending (or paused) from the account, if any."""
    return await session.scalar(
        select(BulkEmail.id).where(
            BulkEmail.email_account_id == account_id,
            BulkEmail.status.not_in(bulk_emails.FINAL_STATUSES),
        )
    )


async def bulk_emails_sent_from(session: AsyncSession, account_id: int, limit: int) -> list[int]:
    """Up to ``limit`` bulk emails (any status) sent from the account, oldest first."""
    rows = await session.scalars(
        select(BulkEmail.id).where(BulkEmail.email_account_id == account_id).order_by(BulkEmail.id).limit(limit)
    )
    return list(rows)

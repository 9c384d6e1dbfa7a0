"""Email accounts: passwords encrypted at rest, never read back; an account in use is not deleted."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.auth import Principal
from bulkmail.query_api.email_accounts import repository
from bulkmail.query_api.email_accounts.schemas import EmailAccountFields, EmailAccountIn
from bulkmail.query_api.errors import Conflict
from bulkmail.query_api.pagination import Page, fetch_page
from bulkmail.shared.models import EmailAccount
from bulkmail.shared.secrets import SecretBox


async def list_page(session: AsyncSession, organization_id: int, page: Page) -> tuple[list[EmailAccount], bool]:
    return await fetch_page(session, repository.accounts_of(organization_id), page)


def apply(account: EmailAccount, payload: EmailAccountFields, box: SecretBox) -> None:
    for key in payload.model_fields_set:
        value = getattr(payload, key)
        if key in ("smtp_password", "imap_password"):
            secret = value.get_secret_value() if value is not None else ""
            setattr(account, f"{key}_encrypted", box.encrypt(secret) if secret else "")
        elif value is not None or key.startswith("limit_"):
            setattr(account, key, value)


async def create(session: AsyncSession, principal: Principal, payload: EmailAccountIn, box: SecretBox) -> EmailAccount:
    account = EmailAccount(organization_id=principal.organization_id, user_id=principal.user_id)
    apply(account, payload, box)
    session.add(account)
    await session.flush()
    await session.refresh(account)
    return account


async def update(session: AsyncSession, account: EmailAccount, payload: EmailAccountFields, box: SecretBox) -> None:
    apply(account, payload, box)
    account.updated_at = datetime.now(UTC)
    await session.flush()


async def delete_account(session: AsyncSession, account: EmailAccount) -> None:
    busy = await repository.unfinished_bulk_email(session, account.id)
    if busy is not None:
        raise Conflict(f"Bulk email {busy} is still sending from this account; cancel it first.")
    # A finished bulk email's report names its sender and its ledger its account: the account stays.
    sent_from = await repository.bulk_emails_sent_from(session, account.id, limit=10)
    if sent_from:
        named = ", ".join(f"bulk email {i}" for i in sent_from)
        raise Conflict(
            f"Email account {account.email!r} sent {named}; it cannot be deleted (change its password or "
            "server settings instead, or leave it unused).",
            used_by={"bulk_emails": sent_from},
        )
    await session.execute(delete(EmailAccount).where(EmailAccount.id == account.id))

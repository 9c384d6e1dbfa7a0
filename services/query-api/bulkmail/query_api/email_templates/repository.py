"""Every query of the email template domain."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.search import CompiledSearch
from bulkmail.shared.models import BulkEmail, EmailTemplate, Lead


def templates_of(organization_id: int) -> Select[Any]:
    return select(EmailTemplate).where(EmailTemplate.organization_id == organization_id).order_by(EmailTemplate.id)


async def bulk_emails_using(session: AsyncSession, template_id: int, *, limit: int) -> list[int]:
    """The first ``limit`` bulk emails (any status) that sent or send the template."""
    return list(
        await session.scalars(
            select(BulkEmail.id).where(BulkEmail.template_id == template_id).order_by(BulkEmail.id).limit(limit)
        )
    )


def leads_with_email(compiled: CompiledSearch) -> Select[Any]:
    """A search's leads that have an email address, in the search's order (as Close's render
    preview counts its entries: leads without one are skipped)."""
    return compiled.ids_where(Lead.num_email_addresses > 0)

"""Every query of the Smart View domain."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared import bulk_emails
from bulkmail.shared.models import BulkEmail, SavedSearch


def saved_searches_of(organization_id: int) -> Select[Any]:
    return select(SavedSearch).where(SavedSearch.organization_id == organization_id).order_by(SavedSearch.id)


async def smart_view_queries(session: AsyncSession, organization_id: int) -> dict[str, str]:
    """Every Smart View of the organisation, name → query (to find which use a view or a template)."""
    rows = await session.execute(
        select(SavedSearch.name, SavedSearch.query).where(SavedSearch.organization_id == organization_id)
    )
    return {name: query for name, query in rows}


async def bulk_emails_sending_to(session: AsyncSession, saved_search_id: int, *, limit: int) -> list[int]:
    """The first ``limit`` unfinished bulk emails that send to the Smart View."""
    return list(
        await session.scalars(
            select(BulkEmail.id)
            .where(BulkEmail.saved_search_id == saved_search_id, BulkEmail.status.in_(bulk_emails.ACTIVE_STATUSES))
            .order_by(BulkEmail.id)
            .limit(limit)
        )
    )

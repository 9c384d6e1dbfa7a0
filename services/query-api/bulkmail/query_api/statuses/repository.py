"""Every query of the lead status domain (a status by its label is the leads' query,
``leads.repository.status_by_label``: the lead resource takes statuses by label too)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.models import Lead, LeadStatus


async def statuses_of(session: AsyncSession, organization_id: int) -> Sequence[LeadStatus]:
    """The organisation's statuses in their order."""
    rows = await session.scalars(
        select(LeadStatus).where(LeadStatus.organization_id == organization_id).order_by(LeadStatus.position)
    )
    return rows.all()


async def next_position(session: AsyncSession, organization_id: int) -> int:
    position = await session.scalar(
        select(func.coalesce(func.max(LeadStatus.position), -1) + 1).where(
            LeadStatus.organization_id == organization_id
        )
    )
    return int(position or 0)


async def count_leads_with(session: AsyncSession, status_id: int) -> int:
    return int(await session.scalar(select(func.count()).where(Lead.status_id == status_id)) or 0)

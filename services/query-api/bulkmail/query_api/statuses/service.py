"""Lead statuses: labels unique per organisation (case-insensitively); one in use cannot be deleted."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete as sql_delete
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.errors import Conflict
from bulkmail.query_api.leads.repository import status_by_label
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.statuses import repository
from bulkmail.shared.models import Lead, LeadStatus


async def list_all(session: AsyncSession, organization_id: int) -> Sequence[LeadStatus]:
    return await repository.statuses_of(session, organization_id)


async def get(session: AsyncSession, organization_id: int, status_id: int) -> LeadStatus:
    return await get_owned(session, LeadStatus, status_id, organization_id, what="lead status")


async def _ensure_label_free(session: AsyncSession, organization_id: int, label: str, own_id: int | None) -> None:
    other = await status_by_label(session, organization_id, label)
    if other is not None and other.id != own_id:
        raise Conflict(f"A lead status labelled {label!r} already exists.")


async def create(session: AsyncSession, organization_id: int, label: str) -> LeadStatus:
    """A new status, after the organisation's last one."""
    await _ensure_label_free(session, organization_id, label, None)
    position = await repository.next_position(session, organization_id)
    row = LeadStatus(organization_id=organization_id, label=label, position=position)
    session.add(row)
    await session.flush()
    return row


async def rename(session: AsyncSession, organization_id: int, status_id: int, label: str) -> LeadStatus:
    row = await get(session, organization_id, status_id)
    await _ensure_label_free(session, organization_id, label, row.id)
    row.label = label
    return row


async def delete(session: AsyncSession, organization_id: int, status_id: int) -> None:
    """Refused (409) while leads have the status: they would silently lose it."""
    row = await get(session, organization_id, status_id)
    in_use = await repository.count_leads_with(session, row.id)
    if in_use:
        raise Conflict(f"{in_use} leads have the status {row.label!r}; move them to another status first.")
    # A lead given the status since the count loses it rather than failing the delete.
    await session.execute(update(Lead).where(Lead.status_id == row.id).values(status_id=None))
    await session.execute(sql_delete(LeadStatus).where(LeadStatus.id == row.id))

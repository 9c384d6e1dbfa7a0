"""Every lead query of the API lives here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from bulkmail.shared.models import Contact, CustomField, Lead, LeadCustomValue, LeadStatus

LEAD_LOAD_OPTIONS: tuple[Any, ...] = (
    selectinload(Lead.status),
    selectinload(Lead.contacts).selectinload(Contact.emails),
    selectinload(Lead.contacts).selectinload(Contact.phones),
    selectinload(Lead.addresses),
    selectinload(Lead.custom_values).selectinload(LeadCustomValue.field),
)


def leads_of(organization_id: int) -> Select[Lead]:
    return select(Lead).where(Lead.organization_id == organization_id).options(*LEAD_LOAD_OPTIONS)


async def load_leads(session: AsyncSession, organization_id: int, ids: Sequence[int]) -> list[Lead]:
    """Leads by id in the given order, with everything the API shows."""
    if not ids:
        return []
    rows = {lead.id: lead for lead in await session.scalars(leads_of(organization_id).where(Lead.id.in_(ids)))}
    return [rows[i] for i in ids if i in rows]


async def count_leads(session: AsyncSession, organization_id: int) -> int:
    return int(await session.scalar(select(func.count()).where(Lead.organization_id == organization_id)) or 0)


async def status_by_label(session: AsyncSession, organization_id: int, label: str) -> LeadStatus | None:
    return await session.scalar(
        select(LeadStatus).where(
            LeadStatus.organization_id == organization_id,
            func.lower(LeadStatus.label) == label.strip().lower(),
        )
    )


async def status_by_id(session: AsyncSession, organization_id: int, status_id: int) -> LeadStatus | None:
    return await session.scalar(
        select(LeadStatus).where(LeadStatus.organization_id == organization_id, LeadStatus.id == status_id)
    )


async def status_labels(session: AsyncSession, organization_id: int) -> list[str]:
    return list(
        await session.scalars(
            select(LeadStatus.label).where(LeadStatus.organization_id == organization_id).order_by(LeadStatus.position)
        )
    )


async def custom_fields_by_name(session: AsyncSession, organization_id: int) -> dict[str, CustomField]:
    fields = await session.scalars(select(CustomField).where(CustomField.organization_id == organization_id))
    return {f.name: f for f in fields}

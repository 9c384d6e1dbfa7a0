"""Every query of the contact domain."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from bulkmail.shared.models import Contact, ContactEmail, ContactPhone

# What the API shows of a contact, loaded with it.
CONTACT_LOAD_OPTIONS: tuple[Any, ...] = (selectinload(Contact.emails), selectinload(Contact.phones))


def contacts_of(organization_id: int, lead_id: int | None = None) -> Select[Any]:
    """The organisation's contacts (of one lead when given), lead by lead in their order."""
    stmt = select(Contact).where(Contact.organization_id == organization_id).options(*CONTACT_LOAD_OPTIONS)
    if lead_id is not None:
        stmt = stmt.where(Contact.lead_id == lead_id)
    return stmt.order_by(Contact.lead_id, Contact.position, Contact.id)


async def count_contacts(session: AsyncSession, lead_id: int, other_than: int | None = None) -> int:
    """How many contacts the lead has, leaving out ``other_than`` (the one being replaced)."""
    stmt = select(func.count()).select_from(Contact).where(Contact.lead_id == lead_id)
    if other_than is not None:
        stmt = stmt.where(Contact.id != other_than)
    return int(await session.scalar(stmt) or 0)


async def count_contact_items(
    session: AsyncSession, model: type[ContactEmail] | type[ContactPhone], lead_id: int, other_than: int | None = None
) -> int:
    """How many contact emails (or phones) the lead has, leaving out those of ``other_than``."""
    stmt = select(func.count()).select_from(model).where(model.lead_id == lead_id)
    if other_than is not None:
        stmt = stmt.where(model.contact_id != other_than)
    return int(await session.scalar(stmt) or 0)


async def next_position(session: AsyncSession, lead_id: int) -> int:
    """The position after the lead's last contact."""
    position = await session.scalar(
        select(func.coalesce(func.max(Contact.position), -1) + 1).where(Contact.lead_id == lead_id)
    )
    return int(position or 0)

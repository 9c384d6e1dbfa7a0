"""What a template sees for each recipient, loaded for a whole batch in a few queries.

Shared by the mailer (sending) and the query-api (preview), so a preview shows exactly what
will be sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.db import among
from bulkmail.shared.models import (
    Contact,
    CustomField,
    CustomFieldType,
    Lead,
    LeadCustomValue,
    LeadStatus,
    Organization,
    User,
)
from bulkmail.shared.templating import (
    ContactData,
    CustomValue,
    LeadData,
    OrganizationData,
    RenderContext,
    UserData,
)


@dataclass(frozen=True)
class RecipientRef:
    lead_id: int
    contact_id: int | None
    email: str


async def sender_context(
    session: AsyncSession, organization_id: int, user_id: int | None
) -> tuple[UserData, OrganizationData]:
    org = await session.get(Organization, organization_id)
    user = await session.get(User, user_id) if user_id is not None else None
    user_data = (
        UserData(first_name=user.first_name, last_name=user.last_name, email=user.email, phone=user.phone)
        if user is not None and user.organization_id == organization_id
        else UserData()
    )
    return user_data, OrganizationData(name=org.name if org else "")


async def load_render_contexts(
    session: AsyncSession,
    organization_id: int,
    refs: Sequence[RecipientRef],
    user: UserData,
    organization: OrganizationData,
) -> list[RenderContext]:
    pg = session.get_bind().dialect.name == "postgresql"
    lead_ids = sorted({r.lead_id for r in refs})
    contact_ids = sorted({r.contact_id for r in refs if r.contact_id is not None})
    leads: dict[int, LeadData] = {}
    first_contact_name: dict[int, str] = {}
    if lead_ids:
        for lead_id, contact_name in await session.execute(
            select(Contact.lead_id, Contact.name)
            .where(among(Contact.lead_id, lead_ids, pg), Contact.organization_id == organization_id)
            .order_by(Contact.lead_id, Contact.position.desc(), Contact.id.desc())
        ):
            first_contact_name[lead_id] = contact_name  # last write wins: position 0
        custom: dict[int, dict[str, CustomValue]] = {}
        for lead_id, name, ftype, text, number, when in await session.execute(
            select(
                LeadCustomValue.lead_id,
                CustomField.name,
                CustomField.type,
                LeadCustomValue.value_text,
                LeadCustomValue.value_number,
                LeadCustomValue.value_date,
            )
            .join(CustomField, CustomField.id == LeadCustomValue.field_id)
            .where(among(LeadCustomValue.lead_id, lead_ids, pg), LeadCustomValue.organization_id == organization_id)
        ):
            custom.setdefault(lead_id, {})[name] = _custom_value(ftype, text, number, when)
        for lead_id, name, description, url, label in await session.execute(
            select(Lead.id, Lead.name, Lead.description, Lead.url, LeadStatus.label)
            .outerjoin(LeadStatus, LeadStatus.id == Lead.status_id)
            .where(among(Lead.id, lead_ids, pg), Lead.organization_id == organization_id)
        ):
            leads[lead_id] = LeadData(
                name=name,
                description=description,
                url=url,
                status=label or "",
                display_name=name or first_contact_name.get(lead_id, ""),
                custom=custom.get(lead_id, {}),
            )
    contacts: dict[int, tuple[str, str]] = {}
    if contact_ids:
        for contact_id, name, title in await session.execute(
            select(Contact.id, Contact.name, Contact.title).where(
                among(Contact.id, contact_ids, pg), Contact.organization_id == organization_id
            )
        ):
            contacts[contact_id] = (name, title)
    out = []
    for ref in refs:
        name, title = contacts.get(ref.contact_id, ("", "")) if ref.contact_id is not None else ("", "")
        out.append(
            RenderContext(
                contact=ContactData(name=name, title=title, email=ref.email),
                lead=leads.get(ref.lead_id, LeadData()),
                user=user,
                organization=organization,
            )
        )
    return out


def _custom_value(ftype: CustomFieldType, text: str | None, number: Decimal | None, when: object) -> CustomValue:
    if ftype == CustomFieldType.number and number is not None:
        return int(number) if number == number.to_integral_value() else number
    return text

"""Email activities: listing a lead's emails and logging one sent elsewhere (bulk sends record
theirs through the ledger, not here)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.activities import repository
from bulkmail.query_api.activities.repository import ActivityFilter
from bulkmail.query_api.activities.schemas import EmailActivityIn
from bulkmail.query_api.auth import Principal
from bulkmail.query_api.errors import BadRequest
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.pagination import Page, fetch_page
from bulkmail.shared.counters import refresh_lead_counters
from bulkmail.shared.models import Contact, EmailActivity, EmailTemplate, Lead


async def list_page(
    session: AsyncSession, organization_id: int, where: ActivityFilter, page: Page
) -> tuple[list[EmailActivity], bool]:
    return await fetch_page(session, repository.activities_of(organization_id, where), page)


async def log(session: AsyncSession, principal: Principal, payload: EmailActivityIn) -> EmailActivity:
    """An email that happened elsewhere, on its lead's timeline (the lead's email counters follow)."""
    org = principal.organization_id
    await get_owned(session, Lead, payload.lead_id, org, what="lead")
    if payload.contact_id is not None:
        contact = await get_owned(session, Contact, payload.contact_id, org, what="contact")
        if contact.lead_id != payload.lead_id:
            raise BadRequest(f"Contact {payload.contact_id} does not belong to lead {payload.lead_id}.")
    if payload.template_id is not None:
        await get_owned(session, EmailTemplate, payload.template_id, org, what="email template")
    values = payload.model_dump(exclude={"to"})
    if values["date_sent"] is None and payload.status == "sent":
        values["date_sent"] = datetime.now(UTC)
    recipients = payload.to or ([payload.to_address] if payload.to_address else [])
    values["to_address"] = recipients[0] if recipients else ""
    values["to_list"] = recipients if len(recipients) > 1 else None
    row = EmailActivity(organization_id=org, user_id=principal.user_id, **values)
    session.add(row)
    await session.flush()
    await refresh_lead_counters(session, [payload.lead_id])
    await session.refresh(row)
    return row

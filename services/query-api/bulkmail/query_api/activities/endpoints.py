"""``/api/v1/activity/email/``: emails on leads' timelines (bulk sends record one per recipient)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import select

from bulkmail.query_api.deps import AuthDep, SessionDep
from bulkmail.query_api.errors import BadRequest
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.pagination import IdFilter, ListResponse, PageDep, fetch_page
from bulkmail.shared.counters import refresh_lead_counters
from bulkmail.shared.models import Contact, EmailActivity, EmailTemplate, Lead

router = APIRouter(prefix="/activity/email", tags=["activity"])

Address = Annotated[str, StringConstraints(min_length=3, max_length=320)]
Body = Annotated[str, StringConstraints(max_length=1_000_000)]


class EmailActivityIn(BaseModel):
    """Log an email that happened elsewhere (e.g. sent from the user's own mail client)."""

    model_config = ConfigDict(extra="forbid")
    lead_id: int
    contact_id: int | None = None
    template_id: int | None = None
    status: Literal["sent", "draft", "inbox", "error"] = "sent"
    direction: Literal["outgoing", "incoming"] = "outgoing"
    subject: Annotated[str, StringConstraints(max_length=998)] = ""
    # Close's recipients; ``to_address`` (one recipient) is the older form and still accepted.
    to: list[Address] = Field(default_factory=list, max_length=100)
    to_address: Address | Literal[""] = ""
    sender: Annotated[str, StringConstraints(max_length=700)] = ""  # "Name" <address>
    body_text: Body = ""
    body_html: Body = ""
    message_id: Annotated[str, StringConstraints(max_length=255)] = ""
    date_sent: datetime | None = None
    date_opened: datetime | None = None


class EmailActivityOut(BaseModel):
    id: int
    lead_id: int
    contact_id: int | None
    template_id: int | None
    bulk_email_id: int | None
    user_id: int | None
    status: str
    direction: str
    subject: str
    to: list[str]
    to_address: str
    sender: str
    body_text: str
    body_html: str
    message_id: str
    date_sent: datetime | None
    date_opened: datetime | None
    date_created: datetime


def to_out(a: EmailActivity) -> EmailActivityOut:
    return EmailActivityOut(
        id=a.id,
        lead_id=a.lead_id,
        contact_id=a.contact_id,
        template_id=a.template_id,
        bulk_email_id=a.bulk_email_id,
        user_id=a.user_id,
        status=a.status,
        direction=a.direction,
        subject=a.subject,
        to=list(a.to_list) if a.to_list else ([a.to_address] if a.to_address else []),
        to_address=a.to_address,
        sender=a.sender,
        body_text=a.body_text,
        body_html=a.body_html,
        message_id=a.message_id,
        date_sent=a.date_sent,
        date_opened=a.date_opened,
        date_created=a.created_at,
    )


@router.get("/", response_model=ListResponse[EmailActivityOut])
async def list_email_activities(
    session: SessionDep,
    principal: AuthDep,
    page: PageDep,
    lead_id: IdFilter = None,
    bulk_email_id: IdFilter = None,
    user_id: IdFilter = None,
    date_created__gt: Annotated[datetime | None, Query()] = None,
    date_created__lt: Annotated[datetime | None, Query()] = None,
) -> ListResponse[EmailActivityOut]:
    """Close's filters (lead, user, creation dates) and ours (the bulk email that sent it)."""
    stmt = select(EmailActivity).where(EmailActivity.organization_id == principal.organization_id)
    if lead_id is not None:
        stmt = stmt.where(EmailActivity.lead_id == lead_id)
    if user_id is not None:
        stmt = stmt.where(EmailActivity.user_id == user_id)
    if date_created__gt is not None:
        stmt = stmt.where(EmailActivity.created_at > date_created__gt)
    if date_created__lt is not None:
        stmt = stmt.where(EmailActivity.created_at < date_created__lt)
    if bulk_email_id is not None:
        stmt = stmt.where(EmailActivity.bulk_email_id == bulk_email_id)
    rows, has_more = await fetch_page(session, stmt.order_by(EmailActivity.id.desc()), page)
    return ListResponse(data=[to_out(a) for a in rows], has_more=has_more)


@router.get("/{activity_id}/", response_model=EmailActivityOut)
async def get_email_activity(activity_id: int, session: SessionDep, principal: AuthDep) -> EmailActivityOut:
    return to_out(
        await get_owned(session, EmailActivity, activity_id, principal.organization_id, what="email activity")
    )


@router.post("/", response_model=EmailActivityOut, status_code=status.HTTP_201_CREATED)
async def log_email_activity(payload: EmailActivityIn, session: SessionDep, principal: AuthDep) -> EmailActivityOut:
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
    return to_out(row)

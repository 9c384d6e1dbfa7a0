"""Email activity payloads: Close's fields (``to``, ``sender``, bodies) and ours (the bulk email)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from bulkmail.shared.models import EmailActivity

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

"""Email template payloads, and a template as rendered for one recipient."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

from bulkmail.shared.models import EmailTemplate

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Subject = Annotated[str, StringConstraints(max_length=998)]
Body = Annotated[str, StringConstraints(max_length=1_000_000)]


class EmailTemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    subject: Subject = ""
    body: Body = ""
    body_text: Body = ""
    is_shared: bool = False


class EmailTemplateUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    subject: Subject | None = None
    body: Body | None = None
    body_text: Body | None = None
    is_shared: bool | None = None


class EmailTemplateOut(BaseModel):
    id: int
    name: str
    subject: str
    body: str
    body_text: str
    # Close's flag, kept and returned; in bulkmail every template is visible to the whole organisation.
    is_shared: bool
    date_created: datetime
    date_updated: datetime


def to_out(t: EmailTemplate) -> EmailTemplateOut:
    return EmailTemplateOut(
        id=t.id,
        name=t.name,
        subject=t.subject,
        body=t.body,
        body_text=t.body_text,
        is_shared=t.is_shared,
        date_created=t.created_at,
        date_updated=t.updated_at,
    )


class RenderedSample(BaseModel):
    """The template as one recipient gets it: the audit's samples and Close's render route."""

    lead_id: int
    contact_id: int | None
    email: str
    subject: str
    body: str
    body_text: str
    empty_tags: list[str]
    unknown_tags: list[str]

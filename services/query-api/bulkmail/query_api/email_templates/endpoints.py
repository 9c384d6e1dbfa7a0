"""``/api/v1/email_template/``: the templates a bulk email sends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, StringConstraints
from sqlalchemy import delete, select

from bulkmail.query_api.deps import AuthDep, SessionDep, SettingsDep
from bulkmail.query_api.email_templates.rendering import check_limits_at_save, compile_or_400
from bulkmail.query_api.errors import Conflict
from bulkmail.query_api.ownership import ensure_name_free, get_owned
from bulkmail.query_api.pagination import ListResponse, PageDep, fetch_page
from bulkmail.query_api.saved_searches.usage import views_using
from bulkmail.shared.models import BulkEmail, EmailTemplate, SavedSearch
from bulkmail.shared.settings import Settings

router = APIRouter(prefix="/email_template", tags=["email_template"])

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


def _validate(settings: Settings, subject: str, body: str, body_text: str) -> None:
    """A template is saved only if every part compiles in the sandbox, and nothing that can be
    known to explode (see ``bulkmail.shared.templating``) is in it."""
    check_limits_at_save(compile_or_400(settings, subject, body, body_text))


@router.get("/", response_model=ListResponse[EmailTemplateOut])
async def list_templates(session: SessionDep, principal: AuthDep, page: PageDep) -> ListResponse[EmailTemplateOut]:
    stmt = select(EmailTemplate).where(EmailTemplate.organization_id == principal.organization_id)
    rows, has_more = await fetch_page(session, stmt.order_by(EmailTemplate.id), page)
    return ListResponse(data=[to_out(t) for t in rows], has_more=has_more)


@router.post("/", response_model=EmailTemplateOut, status_code=status.HTTP_201_CREATED)
async def create_template(
    payload: EmailTemplateIn, session: SessionDep, principal: AuthDep, settings: SettingsDep
) -> EmailTemplateOut:
    await ensure_name_free(session, EmailTemplate, principal.organization_id, payload.name, None, "A template")
    _validate(settings, payload.subject, payload.body, payload.body_text)
    row = EmailTemplate(organization_id=principal.organization_id, **payload.model_dump())
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return to_out(row)


@router.get("/{template_id}/", response_model=EmailTemplateOut)
async def get_template(template_id: int, session: SessionDep, principal: AuthDep) -> EmailTemplateOut:
    return to_out(
        await get_owned(session, EmailTemplate, template_id, principal.organization_id, what="email template")
    )


@router.put("/{template_id}/", response_model=EmailTemplateOut)
async def update_template(
    template_id: int, payload: EmailTemplateUpdate, session: SessionDep, principal: AuthDep, settings: SettingsDep
) -> EmailTemplateOut:
    row = await get_owned(session, EmailTemplate, template_id, principal.organization_id, what="email template")
    changes = payload.model_dump(exclude_none=True)
    if "name" in changes:
        await ensure_name_free(session, EmailTemplate, principal.organization_id, changes["name"], row.id, "A template")
    _validate(
        settings,
        changes.get("subject", row.subject),
        changes.get("body", row.body),
        changes.get("body_text", row.body_text),
    )
    for key, value in changes.items():
        setattr(row, key, value)
    row.updated_at = datetime.now(UTC)
    await session.flush()
    return to_out(row)


@router.delete("/{template_id}/")
async def delete_template(template_id: int, session: SessionDep, principal: AuthDep) -> dict[str, object]:
    """Refused (409) while a bulk email (sending or done: its report shows the template) or a
    Smart View (``emailed_template:``) uses it."""
    org = principal.organization_id
    row = await get_owned(session, EmailTemplate, template_id, org, what="email template")
    sent_with = list(
        await session.scalars(
            select(BulkEmail.id).where(BulkEmail.template_id == row.id).order_by(BulkEmail.id).limit(10)
        )
    )
    views = {
        name: query
        for name, query in await session.execute(
            select(SavedSearch.name, SavedSearch.query).where(SavedSearch.organization_id == org)
        )
    }
    users = await views_using(session, org, principal.user_id, views, template=row.name)
    if sent_with or users:
        uses = [f"bulk email {i}" for i in sent_with] + [f"Smart View {name!r}" for name in users]
        raise Conflict(
            f"Template {row.name!r} is used by {', '.join(uses)}; it cannot be deleted (rename it instead).",
            used_by={"bulk_emails": sent_with, "smart_views": users},
        )
    await session.execute(delete(EmailTemplate).where(EmailTemplate.id == row.id))
    return {}

"""``/api/v1/email_template/``: the templates a bulk email sends."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import select

from bulkmail.query_api.deps import AuthDep, SessionDep, SettingsDep
from bulkmail.query_api.email_templates import service
from bulkmail.query_api.email_templates.schemas import EmailTemplateIn, EmailTemplateOut, EmailTemplateUpdate, to_out
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.pagination import ListResponse, PageDep, fetch_page
from bulkmail.shared.models import EmailTemplate

router = APIRouter(prefix="/email_template", tags=["email_template"])


@router.get("/", response_model=ListResponse[EmailTemplateOut])
async def list_templates(session: SessionDep, principal: AuthDep, page: PageDep) -> ListResponse[EmailTemplateOut]:
    stmt = select(EmailTemplate).where(EmailTemplate.organization_id == principal.organization_id)
    rows, has_more = await fetch_page(session, stmt.order_by(EmailTemplate.id), page)
    return ListResponse(data=[to_out(t) for t in rows], has_more=has_more)


@router.post("/", response_model=EmailTemplateOut, status_code=status.HTTP_201_CREATED)
async def create_template(
    payload: EmailTemplateIn, session: SessionDep, principal: AuthDep, settings: SettingsDep
) -> EmailTemplateOut:
    return to_out(await service.create(session, settings, principal.organization_id, payload))


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
    return to_out(await service.update(session, settings, row, payload))


@router.delete("/{template_id}/")
async def delete_template(template_id: int, session: SessionDep, principal: AuthDep) -> dict[str, object]:
    row = await get_owned(session, EmailTemplate, template_id, principal.organization_id, what="email template")
    await service.delete(session, principal, row)
    return {}

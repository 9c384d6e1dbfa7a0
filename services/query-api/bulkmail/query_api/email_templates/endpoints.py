"""``/api/v1/email_template/``: the templates a bulk email sends, and Close's render preview."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse

from bulkmail.query_api.deps import AuthDep, KeptDep, SessionDep, SettingsDep
from bulkmail.query_api.email_templates import service
from bulkmail.query_api.email_templates.schemas import (
    EmailTemplateIn,
    EmailTemplateOut,
    EmailTemplateUpdate,
    RenderedSample,
    to_out,
)
from bulkmail.query_api.errors import BadRequest
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.pagination import IdFilter, ListResponse, PageDep
from bulkmail.shared.models import EmailTemplate

router = APIRouter(prefix="/email_template", tags=["email_template"])


@router.get("/", response_model=ListResponse[EmailTemplateOut])
async def list_templates(session: SessionDep, principal: AuthDep, page: PageDep) -> ListResponse[EmailTemplateOut]:
    rows, has_more = await service.list_page(session, principal.organization_id, page)
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


@router.get("/{template_id}/render/", response_model=RenderedSample)
async def render_template(
    template_id: int,
    session: SessionDep,
    principal: AuthDep,
    settings: SettingsDep,
    kept: KeptDep,
    query: Annotated[str | None, Query(min_length=1, max_length=10_000)] = None,
    entry: Annotated[int, Query(ge=0, le=99)] = 0,
    mode: Annotated[Literal["lead", "contact"], Query()] = "lead",
    lead_id: IdFilter = None,
    contact_id: IdFilter = None,
) -> RenderedSample | JSONResponse:
    """Close's template preview, in its two forms: for ``lead_id`` (and ``contact_id``), or for the
    ``entry``-th lead (or contact) with an email address among a search's results. Past the last
    one the answer is ``{}``, as Close's."""
    if (lead_id is None) == (query is None):
        raise BadRequest(
            "Give either lead_id (and optionally contact_id) or query (with entry and mode).",
            **{"field-errors": {"query": "give lead_id or query"}},
        )
    if lead_id is not None:
        return await service.render_for_lead(session, settings, principal, template_id, lead_id, contact_id)
    rendered = await service.render_entry(session, settings, principal, template_id, query or "", entry, mode, kept)
    return rendered if rendered is not None else JSONResponse({})

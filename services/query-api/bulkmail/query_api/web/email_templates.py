"""``/templates``: list, create and edit email templates, with a live preview for a chosen lead.

Saving goes through the API's template service (a template is saved only if every part
compiles); a refused save comes back with the edit intact and the error at its part, line and
column. The preview renders the draft as it stands, through the same render code as a send.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.deps import SessionDep
from bulkmail.query_api.email_templates import service
from bulkmail.query_api.email_templates.rendering import limits_from
from bulkmail.query_api.email_templates.schemas import EmailTemplateIn, EmailTemplateUpdate, RenderedSample
from bulkmail.query_api.errors import APIError
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.search import QueryError
from bulkmail.query_api.web.headers import sandboxed_document
from bulkmail.query_api.web.page_errors import page_not_found
from bulkmail.query_api.web.rendering import render
from bulkmail.query_api.web.session import CurrentUser, WebUserDep
from bulkmail.shared.models import EmailTemplate
from bulkmail.shared.settings import Settings
from bulkmail.shared.templating import TemplateError, TemplateRenderError, compile_template

router = APIRouter()

DEFAULT_PREVIEW_QUERY = "has:email_addresses"
PARTS = {"subject": "subject", "body": "HTML body", "body_text": "text part"}


@dataclass
class Draft:
    name: str = ""
    subject: str = ""
    body: str = ""
    body_text: str = ""
    preview_query: str = DEFAULT_PREVIEW_QUERY
    preview_entry: int = 1  # 1-based, as the page shows it

    @classmethod
    async def from_form(cls, request: Request) -> Draft:
        form = await request.form()

        def text(name: str, limit: int = 1_000_000) -> str:
            value = form.get(name)
            return value[:limit] if isinstance(value, str) else ""

        try:
            entry = max(1, min(100, int(text("preview_entry", 10) or "1")))
        except ValueError:
            entry = 1
        return cls(
            name=text("name", 200),
            subject=text("subject", 998),
            body=text("body"),
            body_text=text("body_text"),
            preview_query=text("preview_query", 10_000) or DEFAULT_PREVIEW_QUERY,
            preview_entry=entry,
        )


@dataclass
class CompileProblem:
    part: str
    line: int
    column: int
    message: str
    source_line: str

    @property
    def part_label(self) -> str:
        return PARTS.get(self.part, self.part)


def _problem(draft: Draft, part: str, line: int, column: int, message: str) -> CompileProblem:
    source = getattr(draft, part, "") if part in PARTS else ""
    lines = source.split("\n")
    return CompileProblem(part, line, column, message, lines[line - 1] if 0 < line <= len(lines) else "")


def _compile_problem(draft: Draft) -> CompileProblem | None:
    try:
        compile_template(draft.subject, draft.body, draft.body_text)
    except TemplateError as exc:
        return _problem(draft, exc.part, exc.line, exc.column, exc.message)
    return None


async def _render_draft(
    session: AsyncSession, settings: Settings, user: CurrentUser, draft: Draft
) -> tuple[RenderedSample | None, CompileProblem | None, str]:
    """(the rendered sample, a compile problem, another problem in words), under the render limits."""
    try:
        compiled = compile_template(draft.subject, draft.body, draft.body_text, limits_from(settings))
    except TemplateError as exc:
        return None, _problem(draft, exc.part, exc.line, exc.column, exc.message), ""
    try:
        sample = await service.render_for_entry(
            session, user.principal, compiled, draft.preview_query, draft.preview_entry - 1, "lead"
        )
    except QueryError as exc:
        return None, None, f"The preview's query: {exc.detail} (line {exc.line}, column {exc.column})."
    except APIError as exc:
        return None, None, exc.detail
    except TemplateRenderError as exc:
        return None, None, f"The template failed for this lead: {exc}"
    return sample, None, ""


def _editor(
    request: Request,
    draft: Draft,
    template: EmailTemplate | None,
    *,
    problem: CompileProblem | None = None,
    error: str = "",
    saved: bool = False,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "templates/edit.html",
        {"draft": draft, "template": template, "problem": problem, "error": error, "saved": saved},
        status_code=status_code,
    )


@router.get("/templates")
async def template_list(request: Request, session: SessionDep, user: WebUserDep) -> Response:
    rows = await session.scalars(
        select(EmailTemplate).where(EmailTemplate.organization_id == user.organization_id).order_by(EmailTemplate.name)
    )
    return render(request, "templates/list.html", {"email_templates": list(rows)})


@router.get("/templates/new")
async def new_template(request: Request, user: WebUserDep) -> Response:
    return _editor(request, Draft(), None)


@router.get("/templates/{template_id}")
async def edit_template(
    request: Request, session: SessionDep, user: WebUserDep, template_id: int, saved: int = 0
) -> Response:
    try:
        row = await get_owned(session, EmailTemplate, template_id, user.organization_id, what="email template")
    except APIError as exc:
        return page_not_found(request, exc.detail)
    draft = Draft(name=row.name, subject=row.subject, body=row.body, body_text=row.body_text)
    return _editor(request, draft, row, saved=bool(saved))


async def _save(request: Request, session: AsyncSession, user: CurrentUser, template_id: int | None) -> Response:
    draft = await Draft.from_form(request)
    settings = request.app.state.settings
    row = None
    try:
        if template_id is not None:
            row = await get_owned(session, EmailTemplate, template_id, user.organization_id, what="email template")
        fields = {"name": draft.name, "subject": draft.subject, "body": draft.body, "body_text": draft.body_text}
        if row is None:
            row = await service.create(session, settings, user.organization_id, EmailTemplateIn(**fields))
        else:
            await service.update(session, settings, row, EmailTemplateUpdate(**fields))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _editor(request, draft, row, error=f"Not saved: {problems}", status_code=400)
    except APIError as exc:
        if exc.status_code == 404:
            return page_not_found(request, exc.detail)
        extra: dict[str, Any] = exc.extra
        if "line" in extra:
            problem = _compile_problem(draft) or _problem(
                draft, str(extra["part"]), int(extra["line"]), int(extra["column"]), exc.detail
            )
            return _editor(request, draft, row, problem=problem, error="Not saved.", status_code=400)
        return _editor(request, draft, row, error=f"Not saved: {exc.detail}", status_code=400)
    return RedirectResponse(f"/templates/{row.id}?saved=1", status_code=303)


@router.post("/templates")
async def create_template(request: Request, session: SessionDep, user: WebUserDep) -> Response:
    return await _save(request, session, user, None)


@router.post("/templates/{template_id}")
async def update_template(request: Request, session: SessionDep, user: WebUserDep, template_id: int) -> Response:
    return await _save(request, session, user, template_id)


@router.post("/ui/templates/preview")
async def live_preview(request: Request, session: SessionDep, user: WebUserDep) -> JSONResponse:
    """The draft as the chosen lead would get it: subject, text part, empty tags; or where it fails."""
    draft = await Draft.from_form(request)
    sample, problem, error = await _render_draft(session, request.app.state.settings, user, draft)
    return JSONResponse(
        {
            "problem": problem.__dict__ | {"part_label": problem.part_label} if problem else None,
            "error": error,
            "sample": sample.model_dump(exclude={"body"}) if sample else None,
        }
    )


@router.post("/ui/templates/preview-body")
async def preview_body(request: Request, session: SessionDep, user: WebUserDep) -> Response:
    """The draft's HTML body for the preview iframe (a form posts here with the iframe as target)."""
    draft = await Draft.from_form(request)
    sample, problem, error = await _render_draft(session, request.app.state.settings, user, draft)
    if sample is None:
        where = (
            f"{problem.part_label}, line {problem.line}, column {problem.column}: {problem.message}" if problem else ""
        )
        return sandboxed_document(f"<p>No preview: {html.escape(where or error)}</p>")
    return sandboxed_document(sample.body)

"""``/bulk-emails/new``: choose template, sender and contacts, preview real recipients, send.

Everything the page shows comes from the API's own services: the audit (``service.preview``),
the one-click fixes it computes, ``create_and_queue`` for the send, and an account check for
"Send a test to me". The form posts without JavaScript; ``bulk_email_new.js`` previews as the
choices change and steps through the recipients.
"""

from __future__ import annotations

import html
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.bulk_emails import service
from bulkmail.query_api.bulk_emails.schemas import BulkEmailIn, PreviewIn, PreviewOut
from bulkmail.query_api.deps import OutboxDep, SessionDep, SettingsDep
from bulkmail.query_api.email_accounts import checks
from bulkmail.query_api.email_templates import service as template_service
from bulkmail.query_api.errors import APIError
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.search import QueryError
from bulkmail.query_api.web.headers import sandboxed_document
from bulkmail.query_api.web.page_errors import page_not_found
from bulkmail.query_api.web.rendering import render, templates
from bulkmail.query_api.web.session import CurrentUser, WebUserDep
from bulkmail.shared.models import ContactPreference, EmailAccount, EmailTemplate, Lead, SavedSearch, SkipReason
from bulkmail.shared.render_data import RecipientRef
from bulkmail.shared.settings import Settings
from bulkmail.shared.templating import TemplateRenderError

router = APIRouter()

PREVIEW_SAMPLES = 100  # the first 100 recipients can be stepped through, as the product promises

CONTACT_PREFERENCES = (
    (ContactPreference.lead.value, "First contact of each lead", "the first email address of the lead's first contact"),
    (ContactPreference.contact.value, "Every contact", "the first email address of each contact"),
    (ContactPreference.all.value, "Every address", "every email address of every contact"),
)
EXCLUDED_LABELS = {
    SkipReason.no_email.value: "no email address",
    SkipReason.unsubscribed.value: "unsubscribed",
    SkipReason.suppressed.value: "bounced before (suppressed)",
    SkipReason.already_received_template.value: "already received this template",
    SkipReason.duplicate_address.value: "duplicate address (sent once)",
}


@dataclass
class Choice:
    """The form's fields, as typed (strings), so a refused form comes back as it was."""

    query: str = ""
    saved_search_id: int | None = None
    template_id: int | None = None
    email_account_id: int | None = None
    contact_preference: str = ContactPreference.lead.value
    send_done_email: bool = True
    exclude_already_emailed: bool = True
    idempotency_key: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    async def from_form(cls, request: Request) -> Choice:
        form = await request.form()

        def text(name: str) -> str:
            value = form.get(name)
            return value if isinstance(value, str) else ""

        return cls(
            query=text("query")[:10_000],
            saved_search_id=_int(text("saved_search_id")),
            template_id=_int(text("template_id")),
            email_account_id=_int(text("email_account_id")),
            contact_preference=text("contact_preference") or ContactPreference.lead.value,
            send_done_email=bool(text("send_done_email")),
            exclude_already_emailed=bool(text("exclude_already_emailed")),
            idempotency_key=text("idempotency_key")[:200] or uuid.uuid4().hex,
        )

    def payload(self) -> dict[str, Any]:
        return {
            "query": None if self.saved_search_id is not None else self.query,
            "saved_search_id": self.saved_search_id,
            "template_id": self.template_id or 0,
            "email_account_id": self.email_account_id or 0,
            "contact_preference": self.contact_preference,
            "send_done_email": self.send_done_email,
            "exclude_already_emailed": self.exclude_already_emailed,
        }


def _int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


@dataclass
class Preview:
    audit: PreviewOut | None = None
    error: str = ""
    error_column: int | None = None
    lead_names: dict[int, str] = field(default_factory=dict)


async def _options(session: AsyncSession, organization_id: int) -> tuple[list[EmailTemplate], list[EmailAccount]]:
    found_templates = await session.scalars(
        select(EmailTemplate).where(EmailTemplate.organization_id == organization_id).order_by(EmailTemplate.name)
    )
    accounts = await session.scalars(
        select(EmailAccount).where(EmailAccount.organization_id == organization_id).order_by(EmailAccount.id)
    )
    return list(found_templates), list(accounts)


async def _run_preview(session: AsyncSession, settings: Settings, user: CurrentUser, choice: Choice) -> Preview:
    if choice.template_id is None or choice.email_account_id is None:
        return Preview(error="Choose a template and an email account.")
    try:
        payload = PreviewIn(**choice.payload(), samples=PREVIEW_SAMPLES)
    except ValidationError:
        return Preview(error="Type a query, or open the form from a Smart View.")
    try:
        audit = await service.preview(session, settings, user.principal, payload)
    except QueryError as exc:
        return Preview(error=f"{exc.detail} (line {exc.line}, column {exc.column})", error_column=exc.column)
    except APIError as exc:
        return Preview(error=exc.detail)
    ids = sorted({s.lead_id for s in audit.samples})
    names = {}
    if ids:
        rows = await session.execute(
            select(Lead.id, Lead.name).where(Lead.organization_id == user.organization_id, Lead.id.in_(ids))
        )
        names = {lead_id: name or f"Lead {lead_id}" for lead_id, name in rows}
    return Preview(audit=audit, lead_names=names)


async def _page(
    request: Request,
    session: AsyncSession,
    settings: Settings,
    user: CurrentUser,
    choice: Choice,
    *,
    preview: Preview | None = None,
    notice: str = "",
    send_error: str = "",
    status_code: int = 200,
) -> Response:
    template_rows, accounts = await _options(session, user.organization_id)
    if choice.template_id is None and template_rows:
        choice.template_id = template_rows[0].id
    if choice.email_account_id is None and accounts:
        choice.email_account_id = accounts[0].id
    view = None
    if choice.saved_search_id is not None:
        view = await session.get(SavedSearch, choice.saved_search_id)
        if view is None or view.organization_id != user.organization_id:
            return page_not_found(request, f"No Smart View with id {choice.saved_search_id}.")
    return render(
        request,
        "bulk_emails/new.html",
        {
            "choice": choice,
            "view": view,
            "email_templates": template_rows,
            "accounts": accounts,
            "preferences": CONTACT_PREFERENCES,
            "preview": preview,
            "excluded_labels": EXCLUDED_LABELS,
            "notice": notice,
            "send_error": send_error,
            "max_leads": settings.max_bulk_email_leads,
        },
        status_code=status_code,
    )


def _apply_fix(choice: Choice, fix: str, preview: Preview) -> None:
    """The audit's one-click fixes: the query without earlier recipients, or capped with `limit:`."""
    audit = preview.audit
    if audit is None:
        return
    fixed = audit.resend_fix if fix == "resend" else audit.limit_fix if fix == "limit" else None
    if fixed:
        choice.query, choice.saved_search_id = fixed, None


@router.get("/bulk-emails/new")
async def new_bulk_email(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: WebUserDep,
    query: str = "",
    saved_search_id: int | None = None,
) -> Response:
    choice = Choice(query=query[:10_000], saved_search_id=saved_search_id)
    return await _page(request, session, settings, user, choice)


@router.post("/bulk-emails/new")
async def preview_page(request: Request, session: SessionDep, settings: SettingsDep, user: WebUserDep) -> Response:
    """The form with its preview (the no-JavaScript path; the fix buttons post here too)."""
    choice = await Choice.from_form(request)
    form = await request.form()
    fix = form.get("fix")
    preview = await _run_preview(session, settings, user, choice)
    if isinstance(fix, str) and fix:
        _apply_fix(choice, fix, preview)
        preview = await _run_preview(session, settings, user, choice)
    return await _page(request, session, settings, user, choice, preview=preview)


@router.post("/ui/bulk-emails/preview")
async def live_preview(request: Request, session: SessionDep, settings: SettingsDep, user: WebUserDep) -> JSONResponse:
    """The preview fragment for the form as it stands (the page swaps it in as choices change)."""
    choice = await Choice.from_form(request)
    preview = await _run_preview(session, settings, user, choice)
    html = templates.get_template("bulk_emails/_preview.html").render(
        {
            "preview": preview,
            "choice": choice,
            "excluded_labels": EXCLUDED_LABELS,
            "max_leads": settings.max_bulk_email_leads,
        }
    )
    audit = preview.audit
    return JSONResponse(
        {
            "html": html,
            "recipients": audit.recipients if audit else 0,
            "resend_fix": audit.resend_fix if audit else None,
            "limit_fix": audit.limit_fix if audit else None,
            "error": preview.error,
        }
    )


@router.post("/bulk-emails/new/test-message")
async def send_test_message(
    request: Request, session: SessionDep, settings: SettingsDep, user: WebUserDep, outbox: OutboxDep
) -> Response:
    """Send one previewed recipient's message to the signed-in user, through the chosen account."""
    choice = await Choice.from_form(request)
    form = await request.form()
    target = form.get("test_recipient")
    wants_json = "application/json" in request.headers.get("accept", "")
    lead_id, contact_id, email = _recipient(target if isinstance(target, str) else "")
    problem = ""
    check = None
    if lead_id is None or choice.template_id is None or choice.email_account_id is None:
        problem = "Preview first, then pick a recipient to send a test for."
    else:
        try:
            check = await checks.request_test_message(
                session,
                user.principal,
                outbox,
                account_id=choice.email_account_id,
                template_id=choice.template_id,
                lead_id=lead_id,
                contact_id=contact_id,
                rendered_for=email,
            )
        except APIError as exc:
            problem = exc.detail
    if wants_json:
        if check is None:
            return JSONResponse({"error": "Bad request", "detail": problem}, status_code=400)
        return JSONResponse({"check_id": check.id, "to": user.email}, status_code=202)
    notice = problem or f"A test message is on its way to {user.email}."
    preview = await _run_preview(session, settings, user, choice)
    return await _page(request, session, settings, user, choice, preview=preview, notice=notice)


def _recipient(value: str) -> tuple[int | None, int | None, str]:
    """``lead_id|contact_id|email`` as the preview's buttons carry it."""
    lead, _, rest = value.partition("|")
    contact, _, email = rest.partition("|")
    return _int(lead), _int(contact), email


@router.post("/bulk-emails")
async def send_bulk_email(
    request: Request, session: SessionDep, settings: SettingsDep, user: WebUserDep, outbox: OutboxDep
) -> Response:
    """The blue button: the snapshot is taken now; a resubmitted form finds the same bulk email."""
    choice = await Choice.from_form(request)
    try:
        payload = BulkEmailIn(**choice.payload())
        bulk, _created = await service.create_and_queue(
            session, settings, user.principal, payload, f"web-{choice.idempotency_key}", outbox
        )
    except ValidationError:
        problem = "Choose a template and an email account, and type a query."
    except QueryError as exc:
        problem = f"{exc.detail} (line {exc.line}, column {exc.column})"
    except APIError as exc:
        problem = exc.detail
    else:
        return RedirectResponse(f"/bulk-emails/{bulk.id}", status_code=303)
    preview = await _run_preview(session, settings, user, choice)
    return await _page(request, session, settings, user, choice, preview=preview, send_error=problem, status_code=400)


@router.get("/ui/email-body")
async def email_body(
    request: Request,
    session: SessionDep,
    user: WebUserDep,
    template_id: int,
    lead_id: int,
    contact_id: int | None = None,
    email: str = "",
) -> Response:
    """One recipient's rendered HTML body, for the preview's sandboxed iframe (its own strict policy)."""
    try:
        template = await get_owned(session, EmailTemplate, template_id, user.organization_id, what="email template")
        await get_owned(session, Lead, lead_id, user.organization_id, what="lead")
        sample = await template_service.render_recipient(
            session,
            request.app.state.settings,
            user.principal,
            template,
            RecipientRef(lead_id, contact_id, email[:320]),
        )
    except APIError as exc:
        return sandboxed_document(f"<p>{html.escape(exc.detail)}</p>")
    except TemplateRenderError as exc:
        return sandboxed_document(f"<p>The template failed for this recipient: {html.escape(str(exc))}</p>")
    return sandboxed_document(sample.body)

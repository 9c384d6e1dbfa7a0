"""``/email-accounts``: add and edit sending accounts, and test their connection.

Saving goes through the API's schemas and service (hosts checked, passwords encrypted, never
shown again: a password field left empty keeps the stored one). **Test connection** asks a mailer
to log in over SMTP and IMAP with the saved settings (``email_accounts.checks``); the page shows
the servers' replies, the Sent folder found and what the Gmail rule does with copies.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.deps import OutboxDep, SessionDep
from bulkmail.query_api.email_accounts import checks, service
from bulkmail.query_api.email_accounts.schemas import EmailAccountIn, EmailAccountUpdate
from bulkmail.query_api.errors import APIError
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.web.page_errors import page_not_found
from bulkmail.query_api.web.rendering import render, templates
from bulkmail.query_api.web.session import CurrentUser, WebUserDep
from bulkmail.shared.models import ConnectionSecurity, EmailAccount
from bulkmail.shared.secrets import SecretBox

router = APIRouter()

TEXT_FIELDS = ("email", "name", "smtp_host", "smtp_username", "imap_host", "imap_username", "sent_folder")
NUMBER_FIELDS = ("smtp_port", "imap_port", "min_delay_ms", "max_connections")
LIMIT_FIELDS = ("limit_per_minute", "limit_per_hour", "limit_per_day")
CHOICE_FIELDS = ("smtp_security", "imap_security", "sent_copy_mode")
PASSWORD_FIELDS = ("smtp_password", "imap_password")
SECURITY_CHOICES = (
    (ConnectionSecurity.starttls.value, "STARTTLS (usually port 587 / 143)"),
    (ConnectionSecurity.tls.value, "TLS (usually port 465 / 993)"),
    (ConnectionSecurity.none.value, "None (local servers only)"),
)
SENT_COPY_CHOICES = (
    ("auto", "Automatic (the Gmail and Microsoft 365 rules)"),
    ("always", "Always copy to the Sent folder"),
    ("never", "Never copy to the Sent folder"),
)
NEW_ACCOUNT = {
    "smtp_port": 587,
    "smtp_security": "starttls",
    "imap_port": 993,
    "imap_security": "tls",
    "sent_copy_mode": "auto",
    "min_delay_ms": 0,
    "max_connections": 3,
}


def _values(account: EmailAccount | None) -> dict[str, Any]:
    if account is None:
        return dict(NEW_ACCOUNT)
    names = TEXT_FIELDS + NUMBER_FIELDS + LIMIT_FIELDS + CHOICE_FIELDS
    values = {name: getattr(account, name) for name in names}
    for name in ("smtp_security", "imap_security"):
        values[name] = values[name].value
    return values


async def _form_fields(request: Request, *, new: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what the schema gets, what the form shows back): empty numbers are unset, empty passwords kept."""
    form = await request.form()

    def text(name: str) -> str:
        value = form.get(name)
        return value.strip() if isinstance(value, str) else ""

    shown: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    for name in TEXT_FIELDS + CHOICE_FIELDS:
        shown[name] = fields[name] = text(name)
    for name in NUMBER_FIELDS + LIMIT_FIELDS:
        shown[name] = text(name)
        if shown[name]:
            fields[name] = shown[name]
        elif name in LIMIT_FIELDS and not new:
            fields[name] = None  # emptied: no limit of that kind
    for name in PASSWORD_FIELDS:
        value = form.get(name)
        if isinstance(value, str) and value:
            fields[name] = value
    if not new and not fields.get("email"):
        fields.pop("email", None)
    return fields, shown


def _field_errors(exc: ValidationError) -> dict[str, str]:
    return {str(e["loc"][0]) if e["loc"] else "form": str(e["msg"]) for e in exc.errors()}


def _box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.secret_box  # app.state is untyped: say what it holds
    return box


def _editor(
    request: Request,
    account: EmailAccount | None,
    values: dict[str, Any],
    *,
    errors: dict[str, str] | None = None,
    error: str = "",
    saved: bool = False,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "email_accounts/edit.html",
        {
            "account": account,
            "v": values,
            "errors": errors or {},
            "error": error,
            "saved": saved,
            "security_choices": SECURITY_CHOICES,
            "sent_copy_choices": SENT_COPY_CHOICES,
        },
        status_code=status_code,
    )


async def _owned(session: AsyncSession, user: CurrentUser, account_id: int) -> EmailAccount:
    return await get_owned(session, EmailAccount, account_id, user.organization_id, what="email account")


@router.get("/email-accounts")
async def account_list(request: Request, session: SessionDep, user: WebUserDep) -> Response:
    rows = await session.scalars(
        select(EmailAccount).where(EmailAccount.organization_id == user.organization_id).order_by(EmailAccount.id)
    )
    return render(request, "email_accounts/list.html", {"accounts": list(rows)})


@router.get("/email-accounts/new")
async def new_account(request: Request, user: WebUserDep) -> Response:
    return _editor(request, None, _values(None))


@router.get("/email-accounts/{account_id}")
async def edit_account(
    request: Request, session: SessionDep, user: WebUserDep, account_id: int, saved: int = 0
) -> Response:
    try:
        account = await _owned(session, user, account_id)
    except APIError as exc:
        return page_not_found(request, exc.detail)
    return _editor(request, account, _values(account), saved=bool(saved))


@router.post("/email-accounts")
async def create_account(request: Request, session: SessionDep, user: WebUserDep) -> Response:
    fields, shown = await _form_fields(request, new=True)
    try:
        payload = EmailAccountIn(**fields)
    except ValidationError as exc:
        return _editor(request, None, shown, errors=_field_errors(exc), error="Not saved.", status_code=400)
    account = await service.create(session, user.principal, payload, _box(request))
    return RedirectResponse(f"/email-accounts/{account.id}?saved=1", status_code=303)


@router.post("/email-accounts/{account_id}")
async def update_account(request: Request, session: SessionDep, user: WebUserDep, account_id: int) -> Response:
    try:
        account = await _owned(session, user, account_id)
    except APIError as exc:
        return page_not_found(request, exc.detail)
    fields, shown = await _form_fields(request, new=False)
    try:
        payload = EmailAccountUpdate(**fields)
    except ValidationError as exc:
        return _editor(request, account, shown, errors=_field_errors(exc), error="Not saved.", status_code=400)
    await service.update(session, account, payload, _box(request))
    return RedirectResponse(f"/email-accounts/{account.id}?saved=1", status_code=303)


@router.post("/email-accounts/{account_id}/test")
async def test_connection(
    request: Request, session: SessionDep, user: WebUserDep, outbox: OutboxDep, account_id: int
) -> Response:
    """Queue a connection test of the saved settings; JSON for the page's script, else the page."""
    try:
        check = await checks.request_connection_test(session, user.principal, account_id, outbox)
    except APIError as exc:
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(exc.body(), status_code=exc.status_code)
        return page_not_found(request, exc.detail)
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"check_id": check.id}, status_code=202)
    return RedirectResponse(f"/email-accounts/{account_id}/tests/{check.id}", status_code=303)


@router.get("/email-accounts/{account_id}/tests/{check_id}")
async def test_result(
    request: Request, session: SessionDep, user: WebUserDep, account_id: int, check_id: int
) -> Response:
    """The outcome of a connection test, for a browser without JavaScript (it reloads until done)."""
    try:
        account = await _owned(session, user, account_id)
        outcome = await checks.get_check(session, user.principal, check_id)
    except APIError as exc:
        return page_not_found(request, exc.detail)
    return render(request, "email_accounts/test.html", {"account": account, "check": outcome})


@router.get("/ui/account-checks/{check_id}")
async def account_check(session: SessionDep, user: WebUserDep, check_id: int) -> JSONResponse:
    """A connection test's or test message's outcome, polled by the page until it is done."""
    try:
        outcome = await checks.get_check(session, user.principal, check_id)
    except APIError as exc:
        return JSONResponse(exc.body(), status_code=exc.status_code)
    html = templates.get_template("email_accounts/_check_result.html").render({"check": outcome})
    return JSONResponse(
        {"id": outcome.id, "kind": outcome.kind, "status": outcome.status, "result": outcome.result, "html": html}
    )

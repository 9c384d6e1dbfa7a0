"""Account checks asked for in the web app: "Test connection" and "Send a test to me".

They take the same paths as a real send, so a check that passes means the send will connect
too: the SMTP pool's connect and login, the Sent-folder discovery the copier uses, the Gmail
rule, the message skeleton and ``send_one``. The outcome goes into the ``AccountCheck`` row as
JSON the page shows: the servers' own replies, never a password.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import aiosmtplib
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.mailer.message import HeaderValueError, MessageSkeleton
from bulkmail.mailer.replies import Kind
from bulkmail.mailer.sent_copy import ImapSession, ImapSettings
from bulkmail.mailer.sent_folder import discover_sent_folder
from bulkmail.mailer.smtp_pool import SmtpPool, SmtpSettings
from bulkmail.mailer.smtp_transaction import send_one
from bulkmail.shared.contracts import CheckEmailAccount
from bulkmail.shared.db import Database
from bulkmail.shared.logging import get_logger
from bulkmail.shared.models import (
    AccountCheck,
    AccountCheckKind,
    AccountCheckStatus,
    EmailAccount,
    EmailTemplate,
)
from bulkmail.shared.providers import GMAIL_IMAP_UPLOAD_MAX_LEADS, should_append_sent_copy
from bulkmail.shared.render_data import RecipientRef, load_render_contexts, sender_context
from bulkmail.shared.secrets import SecretBox
from bulkmail.shared.settings import Settings
from bulkmail.shared.templating import TemplateError, TemplateLimits, TemplateRenderError, compile_template

log = get_logger(__name__)

CHECK_TIMEOUT_S = 20.0  # the page waits for the answer: a dead server must not hold it for minutes


async def run_check(settings: Settings, database: Database, message: CheckEmailAccount) -> None:
    """Carry out one pending check and record its outcome (a check already done is left alone)."""
    box = SecretBox.from_settings(settings)
    rendered: tuple[str, str, str] | dict[str, Any] | None = None
    async with database.session() as session:
        check = await session.get(AccountCheck, message.account_check_id)
        if check is None or check.organization_id != message.organization_id:
            return
        account = await session.get(EmailAccount, check.email_account_id)
        if account is None or check.status != AccountCheckStatus.pending:
            return
        if check.kind == AccountCheckKind.test_message:
            rendered = await _render_test_message(settings, session, check)
        session.expunge_all()
    try:
        if check.kind == AccountCheckKind.connection:
            ok, result = await test_connection(box, account)
        elif isinstance(rendered, tuple):
            ok, result = await _send_test_message(box, account, check, rendered)
        else:  # the template could not be rendered: nothing to send
            ok, result = False, rendered or {}
    except Exception as exc:  # recorded for the user; the worker goes on
        log.warning("account check failed", account_check_id=check.id, error=type(exc).__name__)
        ok, result = False, {"error": _describe(exc)}
    async with database.session() as session:
        await session.execute(
            update(AccountCheck)
            .where(AccountCheck.id == check.id, AccountCheck.status == AccountCheckStatus.pending)
            .values(
                status=AccountCheckStatus.ok if ok else AccountCheckStatus.failed,
                result=json.dumps(result),
                finished_at=datetime.now(UTC),
            )
        )


# -- Test connection ------------------------------------------------------------------------


def smtp_settings(box: SecretBox, account: EmailAccount) -> SmtpSettings:
    return SmtpSettings(
        host=account.smtp_host,
        port=account.smtp_port,
        security=account.smtp_security,
        username=account.smtp_username,
        password=box.decrypt(account.smtp_password_encrypted) if account.smtp_password_encrypted else "",
        timeout=CHECK_TIMEOUT_S,
    )


async def test_connection(box: SecretBox, account: EmailAccount) -> tuple[bool, dict[str, Any]]:
    """Log in over SMTP and IMAP; find the Sent folder; say what the Gmail rule does with copies."""
    smtp = await _smtp_login(smtp_settings(box, account))
    imap, capabilities = await _imap_login(box, account)
    small = should_append_sent_copy(account, 1, capabilities)
    large = should_append_sent_copy(account, GMAIL_IMAP_UPLOAD_MAX_LEADS + 1, capabilities)
    sent_copy: dict[str, Any] = {"append": small.append, "reason": small.reason}
    if large != small:
        sent_copy["over_limit"] = {
            "leads": GMAIL_IMAP_UPLOAD_MAX_LEADS,
            "append": large.append,
            "reason": large.reason,
        }
    ok = bool(smtp["ok"]) and (not imap["configured"] or bool(imap["ok"]))
    return ok, {"smtp": smtp, "imap": imap, "sent_copy": sent_copy}


async def _smtp_login(settings: SmtpSettings) -> dict[str, Any]:
    where = f"{settings.host}:{settings.port} ({settings.security.value})"
    pool = SmtpPool(settings, 1)
    try:
        async with pool.connection() as client:
            # Without a login the pool has not spoken yet: EHLO, as a send would, so a server that
            # refuses us says so here.
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()
            greeting = client.last_ehlo_response
            banner = greeting.message.splitlines()[0] if greeting is not None and greeting.message else ""
            login = f"logged in as {settings.username}" if settings.username else "no login needed"
            return {"ok": True, "detail": f"Connected to {where}, {login}.", "reply": banner}
    except Exception as exc:
        return {"ok": False, "detail": f"Could not connect or log in to {where}.", "reply": _describe(exc)}
    finally:
        await pool.close()


async def _imap_login(box: SecretBox, account: EmailAccount) -> tuple[dict[str, Any], set[str] | None]:
    if not account.imap_host.strip():
        return {"configured": False, "ok": False, "detail": "No IMAP server set: no copies in a Sent folder."}, None
    password = box.decrypt(account.imap_password_encrypted) if account.imap_password_encrypted else ""
    imap = ImapSettings.from_account(account, password, command_timeout=CHECK_TIMEOUT_S)
    where = f"{imap.host}:{imap.port} ({imap.security})"
    session = ImapSession(imap)
    try:
        await session.open()
        discovery = await discover_sent_folder(session)
        folder = discovery.mailbox.name if discovery.mailbox else ""
        return {
            "configured": True,
            "ok": True,
            "detail": f"Logged in to {where} as {imap.username}.",
            "sent_folder": account.sent_folder or folder,
            "found_by": "account setting" if account.sent_folder else discovery.how,
        }, set(session.capabilities)
    except Exception as exc:
        return {
            "configured": True,
            "ok": False,
            "detail": f"Could not connect or log in to {where}.",
            "reply": _describe(exc),
        }, None
    finally:
        await session.close()


# -- Send a test to me -------------------------------------------------------------------------


async def _render_test_message(
    settings: Settings, session: AsyncSession, check: AccountCheck
) -> tuple[str, str, str] | dict[str, Any]:
    """(subject, html, text) of the template for the chosen recipient, or the error to report."""
    template = await session.get(EmailTemplate, check.template_id) if check.template_id else None
    if template is None or template.organization_id != check.organization_id or check.lead_id is None:
        return {"error": "The template or the lead of this test no longer exists."}
    try:
        compiled = compile_template(
            template.subject, template.body, template.body_text, TemplateLimits.from_settings(settings)
        )
        user, organization = await sender_context(session, check.organization_id, check.user_id)
        (ctx,) = await load_render_contexts(
            session,
            check.organization_id,
            [RecipientRef(check.lead_id, check.contact_id, check.rendered_for)],
            user,
            organization,
        )
        rendered = compiled.render(ctx)
    except (TemplateError, TemplateRenderError) as exc:
        return {"error": f"The template cannot be rendered: {exc}"}
    return rendered.subject, rendered.html, rendered.text


async def _send_test_message(
    box: SecretBox, account: EmailAccount, check: AccountCheck, rendered: tuple[str, str, str]
) -> tuple[bool, dict[str, Any]]:
    subject, body_html, text = rendered
    domain = account.email.rpartition("@")[2] or "localhost"
    try:
        message = MessageSkeleton(sender_address=account.email, sender_name=account.name).build(
            to_address=check.send_to,
            subject=subject,
            message_id=f"<test-{check.id}.{uuid.uuid4().hex[:12]}@{domain}>",
            text=text,
            html=body_html,
        )
    except HeaderValueError as exc:
        return False, {"error": f"The message cannot be built: {exc}"}
    pool = SmtpPool(smtp_settings(box, account), 1)
    try:
        async with pool.connection() as client:
            verdict = await send_one(client, account.email, check.send_to, message)
    except Exception as exc:
        return False, {"to": check.send_to, "subject": subject, "error": _describe(exc)}
    finally:
        await pool.close()
    sent = verdict.kind == Kind.sent
    return sent, {"to": check.send_to, "subject": subject, "reply": verdict.text or verdict.reason}


def _describe(exc: BaseException) -> str:
    """The server's reply when there was one ("535 5.7.8 Authentication failed"), else the error."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}".strip()
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

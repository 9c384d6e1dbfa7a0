"""Emails bulkmail itself sends to users: how they travel, and the "account paused" notice.

They go through the system SMTP account when one is configured (``BULKMAIL_SYSTEM_SMTP_URL``),
else through the user's own account. The bulk-email-done notice is in ``done_email``.
"""

from __future__ import annotations

import html
import uuid
from urllib.parse import parse_qs, unquote, urlparse

from bulkmail.mailer.message import MessageSkeleton
from bulkmail.mailer.replies import Kind
from bulkmail.mailer.smtp_pool import SmtpPool, SmtpSettings
from bulkmail.mailer.smtp_transaction import send_one
from bulkmail.shared.contracts import AccountPausedNotice
from bulkmail.shared.db import Database
from bulkmail.shared.logging import get_logger
from bulkmail.shared.models import ConnectionSecurity, EmailAccount, User
from bulkmail.shared.secrets import SecretBox
from bulkmail.shared.settings import Settings

log = get_logger(__name__)


def parse_smtp_url(url: str) -> SmtpSettings:
    """``smtp://user:password@host:587?security=starttls`` (security: none, starttls, tls)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("smtp", "smtps") or not parsed.hostname:
        raise ValueError("BULKMAIL_SYSTEM_SMTP_URL must look like smtp://user:password@host:587?security=starttls")
    query = parse_qs(parsed.query)
    default = "tls" if parsed.scheme == "smtps" else "starttls"
    security = ConnectionSecurity(query.get("security", [default])[0])
    port = parsed.port or (465 if security == ConnectionSecurity.tls else 587)
    return SmtpSettings(
        host=parsed.hostname,
        port=port,
        security=security,
        username=unquote(parsed.username or ""),
        password=unquote(parsed.password or ""),
    )


def notice_route(settings: Settings, account: EmailAccount) -> tuple[SmtpSettings, str]:
    """(SMTP server, sender address) for a notice about ``account``'s work."""
    if settings.system_smtp_url:
        return parse_smtp_url(settings.system_smtp_url), settings.system_from_address or account.email
    box = SecretBox.from_settings(settings)
    smtp = SmtpSettings(
        host=account.smtp_host,
        port=account.smtp_port,
        security=account.smtp_security,
        username=account.smtp_username,
        password=box.decrypt(account.smtp_password_encrypted) if account.smtp_password_encrypted else "",
    )
    return smtp, account.email


async def deliver_notice(
    smtp: SmtpSettings, sender: str, to: str, to_name: str, subject: str, text: str, body_html: str, kind: str
) -> None:
    """Send one notice; raises ConnectionError when the server does not accept it."""
    domain = sender.rpartition("@")[2] or "localhost"
    message = MessageSkeleton(sender_address=sender, sender_name="bulkmail").build(
        to_address=to,
        to_name=to_name,
        subject=subject,
        message_id=f"<{kind}.{uuid.uuid4().hex[:12]}@{domain}>",
        text=text,
        html=body_html,
    )
    pool = SmtpPool(smtp, 1)
    try:
        async with pool.connection() as client:
            verdict = await send_one(client, sender, to, message)
    finally:
        await pool.close()
    if verdict.kind != Kind.sent:
        raise ConnectionError(f"{kind} notice not accepted: {verdict.reason}")


async def send_account_paused_email(settings: Settings, database: Database, notice: AccountPausedNotice) -> None:
    """Tell the account's owner that sending rests, why, and when it resumes by itself."""
    async with database.session() as session:
        account = await session.get(EmailAccount, notice.email_account_id)
        if account is None or account.organization_id != notice.organization_id:
            return
        user = await session.get(User, account.user_id) if account.user_id else None
        if user is None:
            return
        smtp, sender = notice_route(settings, account)
        when = notice.paused_until.strftime("%Y-%m-%d %H:%M UTC")
    subject = f"Sending from {account.email} is paused until {when}"
    text = (
        f"Sending from {account.email} stopped for a while. The reason, in its mail server's words:\n\n"
        f"  {notice.reason}\n\n"
        f"Your bulk emails from this account resume by themselves at {when}. Nothing is lost: "
        "recipients not yet sent wait in the queue. If the account's settings are wrong (server, "
        "port, security, login), correct them: the next attempt uses them.\n"
    )
    await deliver_notice(
        smtp,
        sender,
        user.email,
        user.name,
        subject,
        text,
        "<pre>" + html.escape(text) + "</pre>",
        f"account-{account.id}-paused",
    )
    log.info("account paused notice sent", email_account_id=account.id)

"""What a mailer prepares once per bulk email: compiled template, message skeleton, SMTP settings."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.mailer.message import MessageSkeleton
from bulkmail.mailer.smtp_pool import SmtpSettings
from bulkmail.shared.models import BulkEmail, EmailAccount, EmailTemplate
from bulkmail.shared.providers import AccountLimits, Decision, limits_for_account, should_append_sent_copy
from bulkmail.shared.render_data import sender_context
from bulkmail.shared.secrets import SecretBox
from bulkmail.shared.settings import Settings
from bulkmail.shared.templating import (
    CompiledTemplate,
    OrganizationData,
    RenderContext,
    RenderResult,
    TemplateLimits,
    UserData,
    compile_template,
)
from bulkmail.shared.tracking import key_for, tracked_html


@dataclass
class PreparedBulkEmail:
    bulk_email_id: int
    organization_id: int
    template_id: int
    account_id: int
    account_email: str
    account_version: datetime
    template: CompiledTemplate | TrackedTemplate
    skeleton: MessageSkeleton
    smtp: SmtpSettings
    max_connections: int
    user: UserData
    organization: OrganizationData
    message_id_domain: str
    message_id_secret: bytes
    limits: AccountLimits
    # Whether sent messages are copied to the account's IMAP Sent folder (the Gmail rules).
    sent_copy: Decision
    # Whose email activities the sends become, and from whom ("Name" <address>), as Close records them.
    user_id: int | None = None
    sender: str = ""


async def prepare(session: AsyncSession, settings: Settings, box: SecretBox, bulk: BulkEmail) -> PreparedBulkEmail:
    template = await session.get(EmailTemplate, bulk.template_id)
    account = await session.get(EmailAccount, bulk.email_account_id)
    if template is None or account is None or account.organization_id != bulk.organization_id:
        raise LookupError(f"bulk email {bulk.id}: its template or email account no longer exists")
    user, organization = await sender_context(session, bulk.organization_id, bulk.user_id)
    password = box.decrypt(account.smtp_password_encrypted) if account.smtp_password_encrypted else ""
    secret = hmac.new(settings.encryption_keys()[0].encode(), b"bulkmail-message-id", hashlib.sha256).digest()
    domain = account.email.rpartition("@")[2] or "localhost"
    return PreparedBulkEmail(
        bulk_email_id=bulk.id,
        organization_id=bulk.organization_id,
        template_id=template.id,
        account_id=account.id,
        account_email=account.email,
        account_version=account.updated_at or datetime.now(UTC),
        template=_with_tracking(
            compile_template(
                template.subject, template.body, template.body_text, TemplateLimits.from_settings(settings)
            ),
            settings,
            bulk,
        ),
        # A boundary fixed per bulk email: the Sent copy, rebuilt later, is byte for byte the message sent.
        skeleton=MessageSkeleton(
            sender_address=account.email, sender_name=account.name, boundary=f"=_bulkmail_{bulk.id}_{secret.hex()[:16]}"
        ),
        smtp=SmtpSettings(
            host=account.smtp_host,
            port=account.smtp_port,
            security=account.smtp_security,
            username=account.smtp_username,
            password=password,
            timeout=settings.smtp_timeout_s,
        ),
        max_connections=max(1, min(limits_for_account(account).max_connections or 3, settings.smtp_concurrency)),
        user=user,
        organization=organization,
        message_id_domain=domain,
        message_id_secret=secret,
        limits=_scaled(limits_for_account(account), settings.rate_window_scale),
        sent_copy=should_append_sent_copy(account, bulk.n_leads, None),
        user_id=bulk.user_id,
        sender=account.sender,
    )


# --- TRACKING: the one place open/click tracking enters a message (docs/feedback.md) -----------
# The rendered HTML of a bulk email that opted in gets its links rewritten and the pixel added,
# per recipient; the plain-text part is derived before this and keeps the real links. The Sent
# copy goes through prepare() too, so it matches what was sent.


@dataclass(frozen=True)
class TrackedTemplate:
    template: CompiledTemplate
    settings: Settings
    key: bytes
    organization_id: int
    bulk_email_id: int
    opens: bool
    clicks: bool

    def render(self, ctx: RenderContext) -> RenderResult:
        result = self.template.render(ctx)
        html = tracked_html(
            result.html,
            settings=self.settings,
            key=self.key,
            organization_id=self.organization_id,
            bulk_email_id=self.bulk_email_id,
            email_normalized=ctx.contact.email.strip().lower(),
            opens=self.opens,
            clicks=self.clicks,
        )
        return replace(result, html=html)


def _with_tracking(
    template: CompiledTemplate, settings: Settings, bulk: BulkEmail
) -> CompiledTemplate | TrackedTemplate:
    if not (bulk.track_opens or bulk.track_clicks):
        return template  # off by default: the message is exactly the template's
    return TrackedTemplate(
        template, settings, key_for(settings), bulk.organization_id, bulk.id, bulk.track_opens, bulk.track_clicks
    )


# ---------------------------------------------------------------------------------------------

# Providers count by when a message reaches them, a few milliseconds after we reserve its slot;
# windows a little longer than nominal keep that jitter from ever showing as N+1 in a window.
WINDOW_MARGIN = timedelta(milliseconds=250)


def _scaled(limits: AccountLimits, scale: float) -> AccountLimits:
    return replace(
        limits,
        minute=limits.minute * scale + WINDOW_MARGIN,
        hour=limits.hour * scale + WINDOW_MARGIN,
        day=limits.day * scale + WINDOW_MARGIN,
    )

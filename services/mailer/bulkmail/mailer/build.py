"""Building one recipient's message: the only builder, for the message sent and for its Sent copy.

The Sent copy is rebuilt later from the same inputs (the recipient, its render context, the
Date recorded as ``sent_at``), so it is byte for byte the message the server accepted: same
Message-ID, same boundary (fixed per bulk email), same encoded bodies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bulkmail.mailer.message import HeaderValueError, make_message_id
from bulkmail.mailer.prepared import PreparedBulkEmail
from bulkmail.shared.settings import Settings
from bulkmail.shared.templating import RenderContext, RenderResult, TemplateRenderError
from bulkmail.shared.unsubscribe import unsubscribe_url


class MessageNotBuilt(Exception):
    """The template or a header could not be made for this recipient (the message is never sent)."""


@dataclass(frozen=True)
class Addressee:
    recipient_id: int
    email: str
    email_normalized: str
    context: RenderContext


def message_id_of(prepared: PreparedBulkEmail, recipient_id: int) -> str:
    return make_message_id(prepared.bulk_email_id, recipient_id, prepared.message_id_domain, prepared.message_id_secret)


@dataclass(frozen=True)
class BuiltMessage:
    data: bytes  # the RFC 5322 bytes handed to SMTP (and APPENDed as the Sent copy)
    rendered: RenderResult  # what the recipient reads, recorded on the lead's email activity


def build_message(settings: Settings, prepared: PreparedBulkEmail, to: Addressee, date: datetime) -> BuiltMessage:
    """``to``'s message, dated ``date``; raises MessageNotBuilt."""
    try:
        rendered = prepared.template.render(to.context)
        data = prepared.skeleton.build(
            to_address=to.email,
            to_name=to.context.contact.name,
            subject=rendered.subject,
            message_id=message_id_of(prepared, to.recipient_id),
            text=rendered.text,
            html=rendered.html,
            date=date,
            unsubscribe_url=unsubscribe_url(settings, prepared.organization_id, to.email_normalized),
        )
    except (TemplateRenderError, HeaderValueError) as exc:
        raise MessageNotBuilt(str(exc)) from exc
    return BuiltMessage(data, rendered)

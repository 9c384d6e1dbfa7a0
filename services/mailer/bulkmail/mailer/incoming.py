"""What a message in the account's INBOX is, as far as bulkmail cares: read headers first.

:func:`triage` looks only at a few header fields (what the inbox sync fetches for every new
message) and says whether the message may be a bounce, a complaint, an auto-reply or a reply to
one of our messages, and whether its body is needed. Ordinary mail is left alone after its
headers. :func:`read_report` reads a bounce or a complaint whole: bounces with ``flufl.bounce``
(RFC 3464 DSNs and the non-standard formats of Exim, qmail, Exchange, Yahoo...), complaints as
ARF (RFC 5965). The rules are in docs/feedback.md.
"""

from __future__ import annotations

import email
import email.header
import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import getaddresses, parseaddr, parsedate_to_datetime

from flufl.bounce import all_failures

from bulkmail.shared.feedback import Feedback, our_message_ids
from bulkmail.shared.models import FeedbackKind

# The header fields fetched for every new message (BODY.PEEK: the \Seen flag is never set).
HEADER_FIELDS = (
    "MESSAGE-ID",
    "IN-REPLY-TO",
    "REFERENCES",
    "FROM",
    "SUBJECT",
    "DATE",
    "CONTENT-TYPE",
    "AUTO-SUBMITTED",
    "X-AUTOREPLY",
    "X-AUTORESPOND",
    "X-AUTO-RESPONSE-SUPPRESS",
    "PRECEDENCE",
    "X-FAILED-RECIPIENTS",
    "RETURN-PATH",
)

# Senders and subjects of non-standard bounces (RFC 3464 ones say so in their Content-Type).
_BOUNCE_SENDER = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailerdaemon)@", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (status notification|failure|has failed)|failure notice|returned mail|"
    r"mail delivery (failed|system)|delivery failure|could not be delivered|nondeliverable",
    re.I,
)
_AUTO_SUBJECT = re.compile(
    r"^\s*(out of (the )?office|automatic reply|auto(matic)?[- ]?(reply|response)|auto:|abwesenheit|"
    r"absence|r[ée]ponse automatique|respuesta autom[aá]tica|vacation)",
    re.I,
)


class Triage(enum.StrEnum):
    bounce = "bounce"  # a delivery status notification, standard or not: read the body
    complaint = "complaint"  # an ARF feedback report: read the body
    auto_reply = "auto_reply"  # names one of ours, but a machine answered
    reply = "reply"  # names one of ours in In-Reply-To/References
    other = "other"  # the user's own mail: leave it alone


@dataclass(frozen=True)
class Headers:
    message_id: str
    subject: str
    date: datetime | None
    references: list[str]  # our Message-IDs named in In-Reply-To / References
    raw: Message


def parse_headers(data: bytes) -> Headers:
    msg = email.message_from_bytes(data)
    return Headers(
        message_id=str(msg.get("Message-ID", "")).strip(),
        subject=_header_text(msg.get("Subject", "")),
        date=_date(msg.get("Date")),
        references=our_message_ids(str(msg.get("In-Reply-To", "")), str(msg.get("References", ""))),
        raw=msg,
    )


def triage(headers: Headers) -> Triage:
    msg = headers.raw
    content_type = msg.get_content_type()
    report_type = str(msg.get_param("report-type", "") or "").lower()
    if content_type == "multipart/report" and report_type == "feedback-report":
        return Triage.complaint
    if content_type == "multipart/report" and report_type == "delivery-status":
        return Triage.bounce
    sender = parseaddr(str(msg.get("From", "")))[1]
    return_path = str(msg.get("Return-Path", "")).strip()
    if (
        msg.get("X-Failed-Recipients")
        or _BOUNCE_SENDER.match(sender)
        or (return_path == "<>" and _BOUNCE_SUBJECT.search(headers.subject))
    ):
        return Triage.bounce
    if is_auto_reply(msg, headers.subject):
        return Triage.auto_reply if headers.references else Triage.other
    if headers.references:
        return Triage.reply
    return Triage.other


def is_auto_reply(msg: Message, subject: str) -> bool:
    """RFC 3834 ``Auto-Submitted`` (anything but "no"), the common vendor headers, and subjects."""
    auto_submitted = str(msg.get("Auto-Submitted", "no")).strip().lower()
    if auto_submitted and not auto_submitted.startswith("no"):
        return True
    if msg.get("X-Autoreply") or msg.get("X-Autorespond"):
        return True
    if str(msg.get("X-Auto-Response-Suppress", "")).strip().lower() in ("all", "oof", "autoreply"):
        return True
    if str(msg.get("Precedence", "")).strip().lower() in ("auto_reply", "auto-reply"):
        return True
    return bool(_AUTO_SUBJECT.search(subject))


def dedup_key(headers: Headers, account_id: int, uidvalidity: int, uid: int, suffix: str = "") -> str:
    """The incoming message's own Message-ID (stable across UIDVALIDITY changes), else its UID."""
    base = headers.message_id or f"<uid-{account_id}-{uidvalidity}-{uid}>"
    return f"imap:{base}{':' + suffix if suffix else ''}"


def reply_feedback(headers: Headers, kind: FeedbackKind, key: str) -> Feedback:
    return Feedback(
        kind=kind,
        source="imap",
        dedup_key=key,
        message_ids=tuple(headers.references),
        subject=headers.subject,
        occurred_at=headers.date,
        own_message_id=headers.message_id,
    )


# ---------------------------------------------------------------------------------------------
# Reports: bounces and complaints, read whole


def read_bounce(data: bytes, key: str) -> list[Feedback]:
    """One :class:`Feedback` per failed address: permanent → hard, delayed/temporary → soft."""
    msg = email.message_from_bytes(data)
    temporary, permanent = all_failures(msg)
    ours = our_message_ids(_original_text(msg))
    details = _dsn_details(msg)
    out: list[Feedback] = []
    for kind, found in ((FeedbackKind.hard_bounce, permanent), (FeedbackKind.soft_bounce, temporary - permanent)):
        for raw in sorted(found):
            address = raw.decode("ascii", "replace").strip().lower()
            if "@" not in address:
                continue
            out.append(
                Feedback(
                    kind=kind,
                    source="imap",
                    dedup_key=f"{key}:{address}",
                    email=address,
                    message_ids=tuple(ours),
                    detail=details.get(address) or _header_text(msg.get("Subject", "")),
                    occurred_at=_date(msg.get("Date")),
                    own_message_id=str(msg.get("Message-ID", "")).strip(),
                )
            )
    return out


def read_complaint(data: bytes, key: str) -> Feedback | None:
    """An ARF report (RFC 5965): the complainant is the original recipient."""
    msg = email.message_from_bytes(data)
    report: Message | None = None
    original: Message | None = None
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/feedback-report":
            report = _inner(part)
        elif ctype in ("message/rfc822", "text/rfc822-headers") and original is None:
            original = _inner(part)
    if report is None:
        return None
    rcpt = str(report.get("Original-Rcpt-To", "")).strip()
    if not rcpt and original is not None:
        rcpt = next((addr for _, addr in getaddresses([str(original.get("To", ""))]) if addr), "")
    ours = our_message_ids(_original_text(msg))
    feedback_type = str(report.get("Feedback-Type", "abuse")).strip()
    return Feedback(
        kind=FeedbackKind.complaint,
        source="imap",
        dedup_key=key,
        email=parseaddr(rcpt)[1].lower(),
        message_ids=tuple(ours),
        detail=f"{feedback_type} report from {report.get('Reporting-MTA') or report.get('User-Agent') or 'unknown'}",
        occurred_at=_date(report.get("Arrival-Date")) or _date(msg.get("Date")),
        own_message_id=str(msg.get("Message-ID", "")).strip(),
    )


def _inner(part: Message) -> Message:
    """The header block or message a ``message/*`` part carries (parsed already, or from its text)."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    return _as_message(part)


def _as_message(part: Message) -> Message:
    payload = part.get_payload(decode=True)
    return email.message_from_bytes(payload if isinstance(payload, bytes) else b"")


def _original_text(msg: Message) -> str:
    """The parts that carry the returned message (or its headers), where our Message-ID is."""
    texts: list[str] = []
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "text/rfc822-headers", "text/plain", "message/delivery-status"):
            if part.is_multipart():
                texts += [str(p) for p in part.get_payload() if isinstance(p, Message)]
            else:
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    texts.append(payload.decode("utf-8", "replace"))
    return "\n".join(texts)


def _dsn_details(msg: Message) -> dict[str, str]:
    """address → "Status Diagnostic-Code" from an RFC 3464 delivery-status part."""
    details: dict[str, str] = {}
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status" or not part.is_multipart():
            continue
        for block in part.get_payload():
            if not isinstance(block, Message):
                continue
            rcpt = str(block.get("Final-Recipient") or block.get("Original-Recipient") or "")
            address = rcpt.split(";", 1)[-1].strip().strip("<>").lower()
            if address:
                status = str(block.get("Status", "")).strip()
                diagnostic = " ".join(str(block.get("Diagnostic-Code", "")).split(";", 1)[-1].split())
                details[address] = f"{status} {diagnostic}".strip()
    return details


def _header_text(value: object) -> str:
    text = str(email.header.make_header(email.header.decode_header(str(value)))) if value else ""
    return " ".join(text.split())


def _date(value: object) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

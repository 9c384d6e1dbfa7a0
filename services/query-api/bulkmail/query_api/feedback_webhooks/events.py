"""Each sending service's events, as :class:`~bulkmail.shared.feedback.Feedback`.

Only what bulkmail acts on is kept: bounces (hard and soft), complaints and unsubscribes.
Deliveries, opens and clicks reported by the services are ignored (bulkmail's own tracking is
opt-in and signed; docs/feedback.md). Our Message-ID is read from the headers the service
echoes, so the event finds its recipient exactly; failing that, the address is matched among
the account's recent sends.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from bulkmail.shared.feedback import Feedback, our_message_ids
from bulkmail.shared.models import FeedbackKind

K = FeedbackKind


def _angle(message_id: str) -> str:
    message_id = message_id.strip()
    return message_id if message_id.startswith("<") else f"<{message_id}>"


def _ids(*values: object) -> tuple[str, ...]:
    return tuple(our_message_ids(*(_angle(str(v)) for v in values if v)))


def _time(value: object) -> datetime | None:
    try:
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str) and value:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None
    return None


# ---------------------------------------------------------------------------------------------
# Amazon SES (the SNS Message is itself JSON)


def ses_events(sns: Mapping[str, Any]) -> list[Feedback]:
    try:
        event = json.loads(str(sns.get("Message", "")))
    except ValueError:
        return []
    if not isinstance(event, dict):
        return []
    kind = str(event.get("notificationType") or event.get("eventType") or "")
    mail = event.get("mail") or {}
    headers = {str(h.get("name", "")).lower(): h.get("value") for h in mail.get("headers") or [] if isinstance(h, dict)}
    ids = _ids((mail.get("commonHeaders") or {}).get("messageId"), headers.get("message-id"))
    sns_id = str(sns.get("MessageId", ""))
    out: list[Feedback] = []
    if kind == "Bounce":
        bounce = event.get("bounce") or {}
        # Permanent: the address is gone. Transient (mailbox full, too large...) and Undetermined: soft.
        hard = bounce.get("bounceType") == "Permanent"
        for r in bounce.get("bouncedRecipients") or []:
            address = str(r.get("emailAddress", ""))
            out.append(
                Feedback(
                    kind=K.hard_bounce if hard else K.soft_bounce,
                    source="ses",
                    dedup_key=f"ses:{bounce.get('feedbackId') or sns_id}:{address.lower()}",
                    email=address,
                    message_ids=ids,
                    detail=" ".join(str(x) for x in (r.get("status"), r.get("diagnosticCode")) if x)
                    or str(bounce.get("bounceSubType", "")),
                    occurred_at=_time(bounce.get("timestamp")),
                )
            )
    elif kind == "Complaint":
        complaint = event.get("complaint") or {}
        for r in complaint.get("complainedRecipients") or []:
            address = str(r.get("emailAddress", ""))
            out.append(
                Feedback(
                    kind=K.complaint,
                    source="ses",
                    dedup_key=f"ses:{complaint.get('feedbackId') or sns_id}:{address.lower()}",
                    email=address,
                    message_ids=ids,
                    detail=f"{complaint.get('complaintFeedbackType') or 'abuse'} complaint via Amazon SES",
                    occurred_at=_time(complaint.get("timestamp")),
                )
            )
    return out


# ---------------------------------------------------------------------------------------------
# SendGrid (a JSON array of events)

_SENDGRID = {
    "spamreport": K.complaint,
    "unsubscribe": K.unsubscribe,
    "group_unsubscribe": K.unsubscribe,
    "deferred": K.soft_bounce,
}


def sendgrid_events(events: Iterable[Any]) -> list[Feedback]:
    out: list[Feedback] = []
    for e in events:
        if not isinstance(e, dict):
            continue
        name = str(e.get("event", ""))
        if name == "bounce":
            # "blocked" is SendGrid's soft bounce (a temporary refusal it gave up on); "bounce" is hard.
            kind = K.soft_bounce if e.get("type") == "blocked" else K.hard_bounce
        elif name in _SENDGRID:
            kind = _SENDGRID[name]
        else:
            continue
        address = str(e.get("email", ""))
        out.append(
            Feedback(
                kind=kind,
                source="sendgrid",
                dedup_key=f"sendgrid:{e.get('sg_event_id') or e.get('sg_message_id')}:{address.lower()}",
                email=address,
                message_ids=_ids(e.get("smtp-id")),
                detail=" ".join(str(x) for x in (e.get("status"), e.get("reason") or e.get("response")) if x),
                occurred_at=_time(e.get("timestamp")),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# Mailgun (one event per request, in "event-data")


def mailgun_events(data: Mapping[str, Any]) -> list[Feedback]:
    name = str(data.get("event", ""))
    if name == "failed":
        kind = K.hard_bounce if data.get("severity") == "permanent" else K.soft_bounce
    elif name == "complained":
        kind = K.complaint
    elif name == "unsubscribed":
        kind = K.unsubscribe
    else:
        return []
    status = data.get("delivery-status") or {}
    headers = (data.get("message") or {}).get("headers") or {}
    address = str(data.get("recipient", ""))
    return [
        Feedback(
            kind=kind,
            source="mailgun",
            dedup_key=f"mailgun:{data.get('id')}:{address.lower()}",
            email=address,
            message_ids=_ids(headers.get("message-id")),
            detail=" ".join(
                str(x) for x in (status.get("code"), status.get("message") or status.get("description")) if x
            ),
            occurred_at=_time(data.get("timestamp")),
        )
    ]

"""Message contracts between the services and to the outside world (AMQP).

Messages carry ids, never whole rows: the receiver reads the current state from the database.
Each contract is versioned (``v``); a change that breaks readers gets a new version number.
``docs/asyncapi.yaml`` is generated from these models (``make asyncapi``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Work queues (one consumer group each).
DISPATCH_QUEUE = "dispatch"  # → dispatcher: build a bulk email's recipients, pump its chunks
SEND_QUEUE = "send"  # → mailer: send one chunk of recipients
NOTIFY_QUEUE = "notify"  # → mailer: the "bulk email done" / error email to the user
ACCOUNT_NOTICE_QUEUE = "account_notice"  # → mailer: "your email account is paused" to its owner
SENT_COPY_QUEUE = "sent_copy"  # → mailer: IMAP APPEND of sent messages, apart from sending
ACCOUNT_CHECK_QUEUE = "account_check"  # → mailer: test an account's connection, or send a test message


class Contract(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class DispatchBulkEmail(Contract):
    """Build the recipients of a bulk email, or queue more of its chunks (a "pump")."""

    v: Literal[1] = 1
    bulk_email_id: int
    organization_id: int


class SendChunk(Contract):
    v: Literal[1] = 1
    bulk_email_id: int
    organization_id: int
    chunk_id: int


class NotifyBulkEmailDone(Contract):
    v: Literal[1] = 1
    bulk_email_id: int
    organization_id: int


class AccountPausedNotice(Contract):
    """The provider refused or throttled us: the account rests until ``paused_until``."""

    v: Literal[1] = 1
    organization_id: int
    email_account_id: int
    paused_until: datetime
    reason: str


class CheckEmailAccount(Contract):
    """Carry out an ``AccountCheck`` row (a connection test or a test message) and record its outcome."""

    v: Literal[1] = 1
    organization_id: int
    account_check_id: int


class SentCopy(Contract):
    v: Literal[1] = 1
    organization_id: int
    bulk_email_id: int
    recipient_ids: list[int]


# Events on the topic exchange, routing key = ``type``.
BulkEmailEventType = Literal[
    "bulk_email.created",
    "bulk_email.processing",
    "bulk_email.paused",
    "bulk_email.resumed",
    "bulk_email.cancelled",
    "bulk_email.done",
    "bulk_email.error",
]


class BulkEmailCounts(Contract):
    pending: int = 0
    sending: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    deferred: int = 0
    unknown: int = 0
    bounced: int = 0
    complained: int = 0
    replied: int = 0


class BulkEmailEvent(Contract):
    v: Literal[1] = 1
    type: BulkEmailEventType
    organization_id: int
    bulk_email_id: int
    status: str
    n_leads: int = 0
    counts: BulkEmailCounts = Field(default_factory=BulkEmailCounts)
    detail: str = ""
    occurred_at: datetime


class EmailAccountEvent(Contract):
    v: Literal[1] = 1
    type: Literal["email_account.paused"]
    organization_id: int
    email_account_id: int
    paused_until: datetime
    reason: str
    occurred_at: datetime


class EmailOutcome(BaseModel):
    """One recipient's outcome inside an ``EmailEvent``. No address: look it up by id if entitled."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    recipient_id: int
    lead_id: int
    message_id: str = ""
    reason: str = ""


class EmailEvent(Contract):
    """The outcomes of one batch a mailer sent (at most a few dozen), all of one type.

    Version 2: version 1 was one event per recipient, which made a 100,000-recipient send
    100,000 broker messages and cost the mailer more CPU than the SMTP client did.
    """

    v: Literal[2] = 2
    type: Literal["email.sent", "email.failed"]
    organization_id: int
    bulk_email_id: int
    emails: list[EmailOutcome] = Field(min_length=1)
    occurred_at: datetime


EmailFeedbackEventType = Literal["email.bounced", "email.complained", "email.replied", "email.opened", "email.clicked"]


class EmailFeedbackEvent(Contract):
    """What came back about one sent message (docs/feedback.md). No address, as for EmailEvent."""

    v: Literal[1] = 1
    type: EmailFeedbackEventType
    organization_id: int
    bulk_email_id: int
    recipient_id: int
    lead_id: int
    message_id: str = ""
    bounce_type: Literal["hard", "soft"] | None = None
    # An open or click that was probably a privacy proxy or a scanner, not a person.
    machine: bool = False
    # The suppression this caused (hard_bounce, soft_bounces, complaint), if any.
    suppressed: str | None = None
    occurred_at: datetime


# Exact event types first (scripts/asyncapi.py looks them up before the patterns).
EVENT_CONTRACTS: dict[str, type[Contract]] = {
    "email.bounced": EmailFeedbackEvent,
    "email.complained": EmailFeedbackEvent,
    "email.replied": EmailFeedbackEvent,
    "email.opened": EmailFeedbackEvent,
    "email.clicked": EmailFeedbackEvent,
    "bulk_email.*": BulkEmailEvent,
    "email.*": EmailEvent,
    "email_account.*": EmailAccountEvent,
}
QUEUE_CONTRACTS: dict[str, type[Contract]] = {
    DISPATCH_QUEUE: DispatchBulkEmail,
    SEND_QUEUE: SendChunk,
    NOTIFY_QUEUE: NotifyBulkEmailDone,
    ACCOUNT_NOTICE_QUEUE: AccountPausedNotice,
    SENT_COPY_QUEUE: SentCopy,
    ACCOUNT_CHECK_QUEUE: CheckEmailAccount,
}

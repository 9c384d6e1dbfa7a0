"""What comes back about sent mail, applied to the ledger: one path for every source.

The inbox sync (bounces, complaints, replies read from the account's INBOX) and the sending
services' webhooks (SES, SendGrid, Mailgun) both describe what they saw as a :class:`Feedback`
and call :func:`apply`. It finds the recipient (by our Message-ID where the report carries it,
else by the address among the account's recent sends), records the feedback once (a unique key
per organisation makes every source idempotent), moves the recipient
(``shared/ledger/feedback.py``), suppresses the address where that is the rule, and updates the
lead's timeline. The rules are in docs/feedback.md.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared import ledger
from bulkmail.shared.contracts import EmailFeedbackEvent
from bulkmail.shared.counters import normalize_email, refresh_lead_counters
from bulkmail.shared.models import (
    BulkEmail,
    ContactEmail,
    EmailActivity,
    EmailFeedback,
    FeedbackKind,
    Recipient,
    RecipientState,
    Suppression,
)

K = FeedbackKind

# Our Message-IDs: <bulk-{bulk_email_id}-{recipient_id}.{hash}@{domain}> (the mailer's
# make_message_id). The ids say where to look; the whole id must equal the one stored on the
# recipient, so a made-up id matches nothing.
OUR_MESSAGE_ID = re.compile(r"<bulk-(\d{1,18})-(\d{1,18})\.[0-9a-f]{16}@[^<>\s]+>")


def our_message_ids(*texts: str) -> list[str]:
    """Every one of our Message-IDs mentioned in these header values or bodies, first seen first."""
    seen: list[str] = []
    for text in texts:
        for match in OUR_MESSAGE_ID.finditer(text or ""):
            if match.group(0) not in seen:
                seen.append(match.group(0))
    return seen


@dataclass(frozen=True)
class Feedback:
    """One thing that came back, from any source."""

    kind: FeedbackKind
    source: str  # imap | ses | sendgrid | mailgun | postmark | tracking
    # Unique per organisation: the same report seen twice is applied once.
    dedup_key: str
    email: str = ""  # the address it is about (a bounce's failed recipient, a complainant)
    message_ids: tuple[str, ...] = ()  # our Message-IDs it names, best first
    detail: str = ""
    occurred_at: datetime | None = None
    subject: str = ""  # a reply's subject, for the lead's timeline
    own_message_id: str = ""  # the incoming message's own Message-ID (a reply's, on the timeline)
    machine: bool = False


@dataclass(frozen=True)
class Match:
    recipient_id: int
    bulk_email_id: int
    lead_id: int
    contact_id: int | None
    email_normalized: str
    message_id: str


@dataclass
class Applied:
    """What :func:`apply` did. ``status``: applied | duplicate | not_ours."""

    status: Literal["applied", "duplicate", "not_ours"]
    match: Match | None = None
    moved: bool = False  # the recipient's state changed
    suppressed: str | None = None  # the suppression reason added
    events: list[EmailFeedbackEvent] = field(default_factory=list)


EVENT_TYPES: dict[FeedbackKind, str] = {
    K.hard_bounce: "email.bounced",
    K.soft_bounce: "email.bounced",
    K.complaint: "email.complained",
    K.reply: "email.replied",
    K.open: "email.opened",
    K.click: "email.clicked",
}


async def find_recipient(
    session: AsyncSession,
    organization_id: int,
    email_account_id: int | None,
    feedback: Feedback,
    match_days: int,
    now: datetime,
) -> Match | None:
    """By our Message-ID first; else by the address among the account's sends of the last days."""
    columns = (
        Recipient.id,
        Recipient.bulk_email_id,
        Recipient.lead_id,
        Recipient.contact_id,
        Recipient.email_normalized,
        Recipient.message_id,
    )
    for message_id in feedback.message_ids:
        parsed = OUR_MESSAGE_ID.fullmatch(message_id)
        if parsed is None:
            continue
        row = (
            await session.execute(
                select(*columns).where(
                    Recipient.id == int(parsed.group(2)),
                    Recipient.bulk_email_id == int(parsed.group(1)),
                    Recipient.organization_id == organization_id,
                    Recipient.message_id == message_id,
                )
            )
        ).first()
        if row is not None:
            return Match(*row)
    if not feedback.email or email_account_id is None:
        return None
    # The account's bulk emails of the last days, then the (bulk_email_id, address) unique index.
    recent = select(BulkEmail.id).where(
        BulkEmail.organization_id == organization_id,
        BulkEmail.email_account_id == email_account_id,
        BulkEmail.created_at >= now - timedelta(days=match_days),
    )
    row = (
        await session.execute(
            select(*columns)
            .where(
                Recipient.bulk_email_id.in_(recent.scalar_subquery()),
                Recipient.email_normalized == normalize_email(feedback.email),
                Recipient.sent_at.is_not(None),
            )
            .order_by(Recipient.sent_at.desc())
            .limit(1)
        )
    ).first()
    return Match(*row) if row is not None else None


async def record(
    session: AsyncSession, organization_id: int, email_account_id: int | None, match: Match | None, fb: Feedback
) -> bool:
    """Insert the feedback row; False when the same report was recorded before."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    values = {
        "organization_id": organization_id,
        "email_account_id": email_account_id,
        "bulk_email_id": match.bulk_email_id if match else None,
        "recipient_id": match.recipient_id if match else None,
        "email_normalized": match.email_normalized if match else normalize_email(fb.email),
        "kind": fb.kind.value,
        "source": fb.source,
        "detail": fb.detail[:4000],
        "machine": fb.machine,
        "dedup_key": fb.dedup_key[:400],
        "occurred_at": fb.occurred_at or datetime.now(UTC),
    }
    result = await session.execute(
        insert(EmailFeedback)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["organization_id", "dedup_key"])
        .returning(EmailFeedback.id)
    )
    return result.first() is not None


async def suppress(
    session: AsyncSession, organization_id: int, email_normalized: str, reason: str, detail: str, *, replace: bool
) -> None:
    """Put the address on the organisation's suppression list. ``replace``: a complaint outranks
    an earlier reason (it is the one the user must see), other reasons keep the first."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(Suppression).values(
        organization_id=organization_id, email_normalized=email_normalized, reason=reason, detail=detail[:2000]
    )
    keys = ["organization_id", "email_normalized"]
    if replace:
        await session.execute(stmt.on_conflict_do_update(index_elements=keys, set_={"reason": reason}))
    else:
        await session.execute(stmt.on_conflict_do_nothing(index_elements=keys))


async def apply(
    session: AsyncSession,
    organization_id: int,
    email_account_id: int | None,
    fb: Feedback,
    *,
    soft_bounce_limit: int = 3,
    match_days: int = 30,
) -> Applied:
    """Apply one report; the caller commits, then emits ``Applied.events``."""
    now = datetime.now(UTC)
    match = await find_recipient(session, organization_id, email_account_id, fb, match_days, now)
    if match is None and fb.kind != K.unsubscribe:
        # Not about mail we sent (the user's own correspondence): nothing to record.
        return Applied("not_ours")
    if not await record(session, organization_id, email_account_id, match, fb):
        return Applied("duplicate", match)
    applied = Applied("applied", match)
    email = match.email_normalized if match else normalize_email(fb.email)
    if fb.kind == K.hard_bounce and match:
        applied.moved = await ledger.mark_bounced(session, match.recipient_id, now)
        await suppress(session, organization_id, email, "hard_bounce", fb.detail, replace=False)
        applied.suppressed = "hard_bounce"
        await _mark_activity(session, organization_id, match, status="error")
    elif fb.kind == K.soft_bounce and match:
        sends = await session.scalar(
            select(func.count(func.distinct(EmailFeedback.bulk_email_id))).where(
                EmailFeedback.organization_id == organization_id,
                EmailFeedback.email_normalized == email,
                EmailFeedback.kind == K.soft_bounce,
            )
        )
        if (sends or 0) >= soft_bounce_limit:
            await suppress(
                session,
                organization_id,
                email,
                "soft_bounces",
                f"{sends} soft bounces in different bulk emails; last: {fb.detail}",
                replace=False,
            )
            applied.suppressed = "soft_bounces"
    elif fb.kind == K.complaint:
        if match:
            applied.moved = await ledger.mark_complained(session, match.recipient_id, now)
        await suppress(session, organization_id, email, "complaint", fb.detail, replace=True)
        applied.suppressed = "complaint"
    elif fb.kind == K.unsubscribe:
        await session.execute(
            update(ContactEmail)
            .where(ContactEmail.organization_id == organization_id, ContactEmail.email_normalized == email)
            .values(is_unsubscribed=True)
            .execution_options(synchronize_session=False)
        )
        await suppress(session, organization_id, email, "unsubscribed", fb.detail, replace=True)
        applied.suppressed = "unsubscribed"
    elif fb.kind == K.reply and match:
        applied.moved = await ledger.mark_replied(session, match.recipient_id, now)
        # As Close shows a reply: an incoming email on the lead's timeline.
        session.add(
            EmailActivity(
                organization_id=organization_id,
                lead_id=match.lead_id,
                contact_id=match.contact_id,
                bulk_email_id=match.bulk_email_id,
                status="inbox",
                direction="incoming",
                subject=fb.subject[:998],
                to_address="",
                message_id=fb.own_message_id[:255],
                date_sent=fb.occurred_at or now,
                created_at=now,
            )
        )
        await session.flush()
        await refresh_lead_counters(session, [match.lead_id])
    if match is not None and fb.kind in EVENT_TYPES:
        applied.events.append(
            EmailFeedbackEvent(
                type=EVENT_TYPES[fb.kind],
                organization_id=organization_id,
                bulk_email_id=match.bulk_email_id,
                recipient_id=match.recipient_id,
                lead_id=match.lead_id,
                message_id=match.message_id,
                bounce_type="hard" if fb.kind == K.hard_bounce else "soft" if fb.kind == K.soft_bounce else None,
                machine=fb.machine,
                suppressed=applied.suppressed,
                occurred_at=fb.occurred_at or now,
            )
        )
    return applied


async def _mark_activity(session: AsyncSession, organization_id: int, match: Match, *, status: str) -> None:
    """The outgoing email on the lead's timeline shows what became of it."""
    await session.execute(
        update(EmailActivity)
        .where(
            EmailActivity.organization_id == organization_id,
            EmailActivity.lead_id == match.lead_id,
            EmailActivity.message_id == match.message_id,
            EmailActivity.direction == "outgoing",
        )
        .values(status=status)
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class ReportCounts:
    """A bulk email's report: unique recipients per outcome; machine opens and clicks apart."""

    delivered: int = 0  # accepted and not bounced
    bounced_hard: int = 0
    bounced_soft: int = 0
    complained: int = 0
    unsubscribed: int = 0
    replied: int = 0
    auto_replied: int = 0
    opened: int = 0  # by people, as far as can be told
    opened_machine: int = 0  # privacy proxies and scanners only
    clicked: int = 0
    clicked_machine: int = 0


async def report_counts(session: AsyncSession, bulk_email_id: int) -> ReportCounts:
    rows = await session.execute(
        select(EmailFeedback.kind, EmailFeedback.machine, func.count(func.distinct(EmailFeedback.recipient_id)))
        .where(EmailFeedback.bulk_email_id == bulk_email_id)
        .group_by(EmailFeedback.kind, EmailFeedback.machine)
    )
    by: dict[tuple[str, bool], int] = {(FeedbackKind(k).value, bool(m)): n for k, m, n in rows}

    def people(kind: FeedbackKind) -> int:
        return by.get((kind.value, False), 0)

    def machines(kind: FeedbackKind) -> int:
        return by.get((kind.value, True), 0)

    delivered = await session.scalar(
        select(func.count())
        .select_from(Recipient)
        .where(
            Recipient.bulk_email_id == bulk_email_id,
            Recipient.state.in_([RecipientState.sent, RecipientState.replied, RecipientState.complained]),
        )
    )
    return ReportCounts(
        delivered=int(delivered or 0),
        bounced_hard=people(K.hard_bounce),
        bounced_soft=people(K.soft_bounce),
        complained=people(K.complaint),
        unsubscribed=people(K.unsubscribe),
        replied=people(K.reply),
        auto_replied=people(K.auto_reply),
        opened=people(K.open),
        opened_machine=machines(K.open),
        clicked=people(K.click),
        clicked_machine=machines(K.click),
    )


async def record_engagement(
    session: AsyncSession,
    match: Match,
    organization_id: int,
    kind: FeedbackKind,
    *,
    machine: bool,
    detail: str,
    now: datetime,
) -> EmailFeedbackEvent | None:
    """An open or click (every one counts in the totals); returns the event for the first of its
    kind for this recipient. A person's first open dates the lead's email activity (``date_opened``),
    which the search language's ``email_opened`` reads."""
    first = (
        await session.scalar(
            select(func.count())
            .select_from(EmailFeedback)
            .where(EmailFeedback.recipient_id == match.recipient_id, EmailFeedback.kind == kind)
        )
    ) == 0
    first_human = (
        not machine
        and (
            await session.scalar(
                select(func.count())
                .select_from(EmailFeedback)
                .where(
                    EmailFeedback.recipient_id == match.recipient_id,
                    EmailFeedback.kind == kind,
                    EmailFeedback.machine.is_(False),
                )
            )
        )
        == 0
    )
    session.add(
        EmailFeedback(
            organization_id=organization_id,
            bulk_email_id=match.bulk_email_id,
            recipient_id=match.recipient_id,
            email_normalized=match.email_normalized,
            kind=kind,
            source="tracking",
            detail=detail[:1000],
            machine=machine,
            dedup_key=f"tracking:{kind.value}:{match.recipient_id}:{uuid.uuid4().hex}",
            occurred_at=now,
            created_at=now,
        )
    )
    if kind == K.open and first_human:
        await session.execute(
            update(EmailActivity)
            .where(
                EmailActivity.organization_id == organization_id,
                EmailActivity.lead_id == match.lead_id,
                EmailActivity.message_id == match.message_id,
                EmailActivity.direction == "outgoing",
                EmailActivity.date_opened.is_(None),
            )
            .values(date_opened=now)
            .execution_options(synchronize_session=False)
        )
        await session.flush()
        await refresh_lead_counters(session, [match.lead_id])
    if not first:
        return None
    return EmailFeedbackEvent(
        type=EVENT_TYPES[kind],
        organization_id=organization_id,
        bulk_email_id=match.bulk_email_id,
        recipient_id=match.recipient_id,
        lead_id=match.lead_id,
        message_id=match.message_id,
        machine=machine,
        occurred_at=now,
    )
